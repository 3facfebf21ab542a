"""Data: typed records and strict readers for retrieval datasets, runs and training files."""

from __future__ import annotations

from distilrank.data.readers import (
    iter_jsonl,
    load_dataset_spec,
    read_beir,
    read_rank_llm_json,
    read_soft_labels,
    read_topics,
    read_training_file,
    read_trec_folder,
    read_trec_qrels,
    read_trec_run,
)
from distilrank.data.records import (
    Group,
    LabeledPair,
    Passage,
    Query,
    RetrievalDataset,
    Run,
    SoftGroup,
)

__all__ = [
    "Group",
    "LabeledPair",
    "Passage",
    "Query",
    "RetrievalDataset",
    "Run",
    "SoftGroup",
    "iter_jsonl",
    "load_dataset_spec",
    "read_beir",
    "read_rank_llm_json",
    "read_soft_labels",
    "read_topics",
    "read_training_file",
    "read_trec_folder",
    "read_trec_qrels",
    "read_trec_run",
]
