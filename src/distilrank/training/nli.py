"""``distilrank train task=nli``: sentence-pair classification (binary RTE-style or 3-way NLI).

Cross-entropy over the classes; optional soft prompt (``prompt_tokens``) and frozen backbone
(``freeze_backbone``). Evaluation (``eval_data``) reports validation loss, accuracy, binary F1
(the first label, e.g. entailment, as the positive class) or macro F1 and the confusion matrix,
plus the loss and accuracy on a fixed sample of training pairs (the train curve).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch import Tensor

from distilrank.config import TrainConfig
from distilrank.data.collate import pair_lengths
from distilrank.data.nli import NLIExample, read_nli
from distilrank.errors import ConfigError
from distilrank.evaluation.classification import classification_metrics
from distilrank.models.heads import PairClassifier
from distilrank.training.head_run import head_options, run_head_training

logger = logging.getLogger(__name__)

TRAIN_SAMPLE = 256  # training pairs scored at each evaluation for the train accuracy curve


@dataclass
class NLITask:
    """Batches of (premise, hypothesis) pairs; loss = cross-entropy of the ``(B, C)`` logits."""

    model: PairClassifier

    def lengths(self, examples: Sequence[NLIExample]) -> list[int]:
        return pair_lengths(self.model.tokenizer, [e.premise for e in examples], [e.hypothesis for e in examples],
                            self.model.text_length)

    def collate(self, examples: Sequence[NLIExample]) -> dict[str, Any]:
        return {"features": self.model.tokenize([e.premise for e in examples], [e.hypothesis for e in examples]),
                "labels": torch.tensor([e.label for e in examples])}

    def loss(self, model: Any, batch: dict[str, Any]) -> Tensor:
        logits = model(**batch["features"])  # (B, C)
        return F.cross_entropy(logits.float(), batch["labels"].to(logits.device))


def score_nli(model: PairClassifier, examples: Sequence[NLIExample], batch_size: int = 64) -> dict[str, Any]:
    """Loss, accuracy, F1 and confusion matrix of ``model`` on labelled pairs."""
    logits = model.predict_logits([(e.premise, e.hypothesis) for e in examples], batch_size)  # (N, C)
    labels = torch.tensor([e.label for e in examples])
    metrics = classification_metrics(labels.tolist(), logits.argmax(-1).tolist(), model.label_names)
    return {"loss": F.cross_entropy(logits, labels).item(), **metrics}


class NLIEvaluator:
    """Validation metrics on ``eval`` and loss/accuracy on a fixed sample of the training pairs."""

    def __init__(self, eval_examples: Sequence[NLIExample], train_sample: Sequence[NLIExample]) -> None:
        self.eval_examples, self.train_sample = list(eval_examples), list(train_sample)

    def __call__(self, model: PairClassifier) -> dict[str, Any]:
        out = score_nli(model, self.eval_examples)
        train = score_nli(model, self.train_sample)
        out.update(train_loss=train["loss"], train_accuracy=train["accuracy"])
        return out


def run_nli(cfg: TrainConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train an NLI classifier as ``cfg`` says (task=nli); returns the metrics written to metrics.json."""
    from distilrank.training.loop import make_accelerator

    accelerator = make_accelerator(cfg)
    train = read_nli(cfg.train_file, "train", cfg.labels)
    names = train.label_names
    evaluate, info = None, {"train_examples": len(train.examples), "train_skipped_no_gold": train.skipped,
                            "labels": list(names)}
    if cfg.eval_data:
        dev = read_nli(cfg.eval_data, cfg.eval_split, names)
        if dev.label_names != names:
            raise ConfigError(f"eval_data labels {list(dev.label_names)} differ from train labels {list(names)}")
        dev_examples = dev.examples[:cfg.eval_max_examples or None]
        sample = [train.examples[i] for i in torch.randperm(
            len(train.examples), generator=torch.Generator().manual_seed(cfg.seed))[:TRAIN_SAMPLE].tolist()]
        evaluate = NLIEvaluator(dev_examples, sample)
        info.update(eval_examples=len(dev_examples), eval_skipped_no_gold=dev.skipped)
    set_seed(cfg.seed)  # before the model: the fresh head and soft prompt are initialised at random
    model = PairClassifier.from_pretrained(cfg.model, names, head_options(cfg))
    return run_head_training(cfg, accelerator, model, NLITask(model), train.examples, evaluate, info, on_step)
