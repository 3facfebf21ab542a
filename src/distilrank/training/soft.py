"""InRanker-style Python API: distil a teacher's soft labels into a small reranker.

The knobs are those InRanker users know; underneath it is :func:`distilrank.training.run.run_training`
with a :class:`~distilrank.config.TrainConfig` (one loop, one run directory layout):

    >>> trainer = SoftLabelTrainer(model="t5-small", batch_size=32, bf16=True,
    ...                            output_dir="trained_model")          # doctest: +SKIP
    >>> data = trainer.load_custom_dataset(distill_file="labels.jsonl")  # doctest: +SKIP
    >>> trainer.train(data)                                              # doctest: +SKIP
    >>> Reranker.load("trained_model/model").rank("query", ["doc", ...])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distilrank.config import TrainConfig, build_config
from distilrank.data.records import SoftGroup
from distilrank.errors import ConfigError

logger = logging.getLogger(__name__)


class SoftLabelTrainer:
    """Train a student (T5-family seq2seq or cross-encoder) on a teacher's soft labels.

    Args mirror InRanker's trainer: ``model`` (checkpoint folder or hub name), ``batch_size``
    (training examples per device step: pairs with the pointwise ``logit_mse``, query groups of up
    to ``group_size`` documents with ``kl``/``margin_mse``), ``warmup_steps`` (0: none),
    ``num_train_epochs``, ``logging_steps``, ``save_steps`` (0: save only at the end),
    ``learning_rate``, ``gradient_accumulation_steps``, ``bf16`` (bfloat16 mixed precision) and
    ``output_dir`` (the trained model goes to ``<output_dir>/model``, beside the run's logs and
    plots). ``loss`` defaults to ``logit_mse`` for a seq2seq student on [false, true] logit labels
    (InRanker's loss) and to ``kl`` otherwise (``logit_mse`` when no query has two documents).
    Any other :class:`~distilrank.config.TrainConfig` key may be passed as a keyword (``seed``,
    ``group_size``, ``temperature``, ``max_steps``, ...). Settings are validated here, at once.
    """

    def __init__(
        self,
        model: str = "t5-small",
        batch_size: int = 32,
        warmup_steps: int = 0,
        num_train_epochs: float = 1.0,
        logging_steps: int = 10,
        save_steps: int = 0,
        learning_rate: float = 7e-5,
        gradient_accumulation_steps: int = 1,
        bf16: bool = False,
        output_dir: str = "trained_model",
        loss: str | None = None,
        max_length: int = 512,
        **overrides: Any,
    ) -> None:
        self.loss = loss
        self.max_length = max_length
        self.settings: dict[str, Any] = {
            "model": str(model), "batch_size": batch_size, "warmup_steps": warmup_steps,
            # InRanker (HF Trainer) warms up only over warmup_steps: no ratio-based warmup by default
            "warmup_ratio": 0.0, "epochs": num_train_epochs, "log_steps": logging_steps,
            "save_steps": save_steps, "learning_rate": learning_rate,
            "gradient_accumulation_steps": gradient_accumulation_steps,
            "mixed_precision": "bf16" if bf16 else "no", "output_dir": str(output_dir), **overrides,
        }
        self._sources: dict[int, str] = {}  # id(dataset list) -> where it was loaded from (saved in config.yaml)
        self._config("(validation)", loss or "logit_mse")  # fail now on a bad knob, not after loading data

    @property
    def model_dir(self) -> Path:
        """Where :meth:`train` writes the trained model."""
        return Path(self.settings["output_dir"]) / "model"

    def _config(self, train_file: str, loss: str, resume: bool = False) -> TrainConfig:
        values = {"group_size": 1 if loss == "logit_mse" else 8, **self.settings}
        values.update(train_file=train_file, loss=loss, max_length=self.max_length, resume=resume)
        return build_config(TrainConfig, values)

    def _remember(self, groups: list[SoftGroup], source: str) -> list[SoftGroup]:
        self._sources[id(groups)] = source
        return groups

    def load_custom_dataset(self, distill_file: str | None = None, max_length: int | None = None) -> list[SoftGroup]:
        """Soft labels from a jsonl file of ``{query, contents, true_logit, false_logit}`` (or ``score``) rows.

        ``None`` loads InRanker's published BEIR soft labels (``unicamp-dl/InRanker-BEIR``) from the
        hub. ``max_length`` (tokens per input) also applies to the training that follows.
        """
        if max_length is not None:
            self.max_length = max_length
        if distill_file is None:
            from distilrank.data.hub import load_inranker_dataset

            return self._remember(load_inranker_dataset("beir"), "unicamp-dl/InRanker-BEIR")
        from distilrank.data.readers import read_soft_labels

        return self._remember(read_soft_labels(distill_file), str(distill_file))

    def load_msmarco_dataset(self, max_length: int | None = None, **kwargs: Any) -> list[SoftGroup]:
        """InRanker's MS MARCO soft labels (``unicamp-dl/InRanker-msmarco``) with the mMARCO texts.

        ``kwargs`` go to :func:`distilrank.data.hub.load_inranker_dataset` (``data_files``,
        ``corpus``, ``queries``, ``language``, ``cache_dir``, ``max_rows``).
        """
        from distilrank.data.hub import load_inranker_dataset

        if max_length is not None:
            self.max_length = max_length
        return self._remember(load_inranker_dataset("msmarco", **kwargs), "unicamp-dl/InRanker-msmarco")

    def default_loss(self, groups: Sequence[SoftGroup]) -> str:
        """``logit_mse`` for a seq2seq student on logit labels, else ``kl`` (``logit_mse`` for lone documents)."""
        from distilrank.models.seq2seq import is_seq2seq_checkpoint

        if all(g.logits is not None for g in groups) and is_seq2seq_checkpoint(self.settings["model"]):
            return "logit_mse"
        if all(len(g.documents) < 2 for g in groups):
            logger.warning("every query has a single labelled document: training with loss=logit_mse, not kl")
            return "logit_mse"
        return "kl"

    def train(self, train_dataset: Sequence[SoftGroup], resume_training: bool = False) -> dict[str, Any]:
        """Train on ``train_dataset`` (soft-label groups); returns the run's metrics (also in metrics.json).

        ``resume_training=True`` continues from the last checkpoint in ``output_dir``.
        """
        from distilrank.training.run import run_training

        groups = list(train_dataset)
        if not groups:
            raise ConfigError("train_dataset is empty: load it with load_custom_dataset() or load_msmarco_dataset()")
        if not all(isinstance(g, SoftGroup) for g in groups):
            raise ConfigError("train_dataset must hold SoftGroup records, as load_custom_dataset() returns")
        source = self._sources.get(id(train_dataset), f"(python: {len(groups)} soft-label groups)")
        cfg = self._config(source, self.loss or self.default_loss(groups), resume=resume_training)
        return run_training(cfg, examples=groups)
