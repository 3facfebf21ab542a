"""Losses: pure tensor functions (scores and targets in, scalar tensor out)."""

from distilrank.losses.ranking import (
    listwise_softmax_ce,
    margin_mse,
    pairwise_margin,
    pointwise_bce,
)

__all__ = ["listwise_softmax_ce", "margin_mse", "pairwise_margin", "pointwise_bce"]
