"""distilrank.training."""
