"""distilrank.inference."""
