"""Losses: pure tensor functions (scores and targets in, scalar tensor out)."""

from distilrank.losses.distill import hidden_cosine, kd_kl, listwise_kl, logit_mse, mlm_ce
from distilrank.losses.embedding import (
    embedding_mse,
    in_batch_kl,
    multiple_negatives_ranking,
    triplet_margin,
)
from distilrank.losses.ltr import adr_mse, lambda_loss, listnet, plistmle, ranknet
from distilrank.losses.ranking import (
    listwise_softmax_ce,
    margin_mse,
    pairwise_margin,
    pointwise_bce,
)

__all__ = [
    "adr_mse",
    "embedding_mse",
    "hidden_cosine",
    "in_batch_kl",
    "kd_kl",
    "lambda_loss",
    "listwise_kl",
    "listnet",
    "listwise_softmax_ce",
    "logit_mse",
    "margin_mse",
    "mlm_ce",
    "multiple_negatives_ranking",
    "pairwise_margin",
    "plistmle",
    "pointwise_bce",
    "ranknet",
    "triplet_margin",
]
