"""distilrank.mining."""
