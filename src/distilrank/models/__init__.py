"""distilrank.models."""
