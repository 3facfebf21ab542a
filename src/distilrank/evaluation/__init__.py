"""distilrank.evaluation."""
