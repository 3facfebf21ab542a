"""Dataclass configs for every entry point: YAML file + ``key=value`` overrides, validated.

Each config is frozen, checks itself in ``__post_init__`` and is saved into every run
directory (``config.yaml``) so a run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from distilrank.errors import ConfigError

DEFAULT_MODEL = "packaged:all-MiniLM-L6-v2"  # resolved by distilrank.models.resolve_model_path

# learning-to-rank losses over each query's list (distilrank.losses.ltr): graded labels, teacher scores or rankings
LTR_LOSSES = ("ranknet", "listnet", "plistmle", "lambdaloss", "adr_mse")
# a bi-encoder learning a teacher bi-encoder online (texts only: no labels are read): embed_mse regresses its
# embeddings on the teacher's; embed_kl matches each query's distribution over every passage of the batch
EMBED_DISTILL = ("embed_mse", "embed_kl")
LOSSES = ("bce", "pairwise", "listwise", "margin_mse", "logit_mse", "kl", "triplet", "mnrl", *EMBED_DISTILL,
          *LTR_LOSSES)
# what an LTR loss reads the training targets as; "": labels for binary groups, scores for teacher scores
LTR_TARGETS = ("", "labels", "scores", "ranks")
# losses that train a bi-encoder (query and passage embedded apart) instead of a cross-encoder
EMBEDDING_LOSSES = ("triplet", "mnrl")
# losses only a bi-encoder trains (binary labels, or a teacher's embeddings)
BI_ONLY_LOSSES = (*EMBEDDING_LOSSES, *EMBED_DISTILL)
# losses that learn from a teacher's soft labels (scores or [false, true] logits), not from binary relevance
SOFT_LOSSES = ("margin_mse", "logit_mse", "kl")
# the kind of reranker trained: "" lets the loss decide (EMBEDDING_LOSSES: a bi-encoder, any other: a cross-encoder)
ENCODERS = ("", "cross", "bi")
STUDENT_ARCHITECTURES = ("same", "distilbert")
TEACHER_HEAD = ("fit", "skip_kl")
MIXED_PRECISION = ("no", "bf16", "fp16")

C = TypeVar("C")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        _check(value > 0, f"{name} must be > 0, got {value!r}")


def _check_passages(cfg: Any) -> None:
    """long_documents / passage_stride / max_passages (see distilrank.data.passages)."""
    _check(cfg.long_documents in ("", "firstp", "maxp"),
           f"long_documents must be firstp, maxp or empty (the model's own), got {cfg.long_documents!r}")
    _check(0 <= cfg.passage_stride <= 1024, f"passage_stride must be in [0, 1024] (0: the model's own), "
           f"got {cfg.passage_stride}")
    _check(cfg.max_passages >= -1, f"max_passages must be >= 0, or -1 for the model's own, got {cfg.max_passages}")


def _check_scoring(cfg: Any) -> None:
    """encoder / allow_new_head of the commands that score with a saved model (see distilrank.models.kind)."""
    _check(cfg.encoder in ("", "bi", "cross"), f"encoder must be 'bi' (cosine of pooled embeddings), 'cross' or "
           f"empty (the model folder's own kind), got {cfg.encoder!r}")
    _check(not cfg.allow_new_head or cfg.encoder == "cross",
           "allow_new_head=true applies to encoder=cross (a cross-encoder with a newly initialised head)")


def _check_fraction(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        _check(0.0 <= value <= 1.0, f"{name} must be in [0, 1], got {value!r}")


TASKS = ("rerank", "nli", "qa")
PROMPT_METHODS = ("prompt_tuning", "p_tuning")


def _check_task(cfg: Any) -> None:
    """TrainConfig keys of the nli and qa tasks and of soft prompts."""
    _check(cfg.task in TASKS, f"task must be one of {TASKS}, got {cfg.task!r}")
    _check(cfg.prompt_method in PROMPT_METHODS, f"prompt_method must be one of {PROMPT_METHODS}, got {cfg.prompt_method!r}")
    _check(0 <= cfg.prompt_tokens <= 256, f"prompt_tokens must be in [0, 256], got {cfg.prompt_tokens}")
    head = cfg.task in ("nli", "qa")
    embed = cfg.loss in EMBED_DISTILL
    _check(head or not (cfg.prompt_tokens or cfg.freeze_backbone), "prompt_tokens and freeze_backbone apply to "
           "task=nli or task=qa")
    _check(not cfg.teacher or cfg.task == "qa" or embed, "teacher applies to task=qa (start/end logit "
           "distillation) and loss=embed_mse or embed_kl (a bi-encoder teacher, learnt online)")
    _check(not embed or (bool(cfg.teacher) and cfg.task == "rerank"), f"loss={cfg.loss} needs teacher=: the "
           "bi-encoder folder whose embeddings the student learns")
    _check(cfg.doc_stride >= 0 and cfg.n_best >= 1 and cfg.max_answer_length >= 1 and cfg.eval_max_examples >= 0,
           "doc_stride and eval_max_examples must be >= 0, n_best and max_answer_length >= 1")
    _check(cfg.doc_stride < cfg.max_length // 2, f"doc_stride {cfg.doc_stride} must be below max_length / 2")
    _check(cfg.prompt_tokens < cfg.max_length, "prompt_tokens must be below max_length")
    _check(len(set(cfg.labels)) == len(cfg.labels) and (not cfg.labels or len(cfg.labels) >= 2),
           f"labels must be at least two distinct names, got {list(cfg.labels)}")
    _check_fraction(cfg, "alpha_kd")


@dataclass(frozen=True)
class TrainConfig:
    """``distilrank train``: fine-tune a reranker (cross-encoder or seq2seq) on binary or soft labels."""

    train_file: str = ""
    model: str = DEFAULT_MODEL
    output_dir: str = "runs/train"
    loss: str = "listwise"
    max_steps: int = 0  # 0: run `epochs` epochs instead
    epochs: float = 1.0
    batch_size: int = 8  # training examples (groups, triplets or pairs) per optimizer step
    group_size: int = 8  # documents per group (1 positive + group_size-1 negatives; soft labels: per sub-group)
    gradient_accumulation_steps: int = 1
    max_length: int = 128
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    warmup_steps: int = 0  # > 0: warm up over this many steps instead of warmup_ratio of them
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    margin: float = 1.0  # pairwise loss margin
    # kl: softmax temperature over each query's group (teacher and student); embed_kl: over the query's cosines to
    # every passage of the batch (0.05 = mnrl's scale 20)
    temperature: float = 1.0
    num_layers: int = 0  # 0: keep all encoder layers; k: keep the first k (smaller student)
    mixed_precision: str = "no"
    num_workers: int = 0  # background processes that tokenize batches (2-4 keep a GPU busy; 0: main process)
    push_to_hub: str = ""  # user/name: upload output_dir/model with a generated model card when training ends
    # documents longer than max_length: "firstp" (truncate), "maxp" (best of overlapping passages), "": the model's own
    long_documents: str = ""
    passage_stride: int = 0  # document tokens shared by neighbouring passages (0: the model's own, default 64)
    max_passages: int = -1  # passages scored per document with maxp (0: all; -1: the model's own, default 16)
    seed: int = 42
    save_steps: int = 0  # 0: save only at the end
    save_total_limit: int = 2
    eval_data: str = ""  # dataset spec evaluated every eval_steps (empty: no evaluation)
    eval_split: str = "dev"
    eval_steps: int = 0
    eval_top_k: int = 20
    eval_max_queries: int = 100
    log_steps: int = 10
    resume: bool = False
    # task heads (issue 6): pair classification (NLI) and extractive QA, optionally with soft prompts
    task: str = "rerank"  # "rerank", "nli" (premise/hypothesis classification) or "qa" (SQuAD-style spans)
    labels: tuple[str, ...] = ()  # nli: the label names in class order; empty: inferred from the data
    prompt_tokens: int = 0  # nli/qa: > 0 prepends this many trainable soft-prompt (virtual) tokens
    prompt_method: str = "prompt_tuning"  # "prompt_tuning" (PEFT PromptEmbedding) or "p_tuning" (PromptEncoder MLP)
    freeze_backbone: bool = False  # nli/qa: train only the task head (and the soft prompt, if any)
    doc_stride: int = 0  # qa: tokens shared by neighbouring windows of a long context; 0: max_length // 4
    max_answer_length: int = 30  # qa: longest answer, in tokens
    n_best: int = 20  # qa: start and end candidates per window in answer post-processing
    # qa: a QA model whose start/end logits are distilled (KL at `temperature`); loss=embed_mse or embed_kl: the
    # bi-encoder whose embeddings (mse) or in-batch query-passage similarities (kl) of the training texts the student learns
    teacher: str = ""
    alpha_kd: float = 0.5  # qa with a teacher: weight of the KL term; 1 - alpha_kd weighs the gold-span loss
    eval_max_examples: int = 0  # nli/qa: evaluate on the first N examples of eval_data (0: all)
    # bi-encoders (loss=triplet or mnrl): `margin` is the triplet margin over `distance`
    distance: str = "cosine"  # triplet: "cosine" (1 - cos) or "euclidean"
    scale: float = 20.0  # mnrl: multiplies cosine similarities before the softmax over in-batch passages
    pooling: str = "mean"  # bi-encoder pooling: "mean" or "cls"
    # "bi": a bi-encoder (also on soft labels: its score scale * cosine learns the teacher's); "cross": a
    # cross-encoder (or seq2seq) reranker; "": the loss decides (triplet and mnrl: bi-encoder)
    encoder: str = ""
    # LTR losses (ranknet, listnet, plistmle, lambdaloss, adr_mse): what the targets are ("ranks": only the order
    # of the teacher's scores counts, e.g. a listwise LLM teacher's ranking) and lambdaloss's weighting scheme
    targets: str = ""
    lambda_scheme: str = "ndcg2pp"

    @property
    def bi_encoder(self) -> bool:
        """Whether this run trains a bi-encoder."""
        return self.encoder == "bi" or (not self.encoder and self.loss in BI_ONLY_LOSSES)

    def __post_init__(self) -> None:
        _check(bool(self.train_file), "train_file is required: a jsonl/tsv training file or hub name")
        _check_task(self)
        _check(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
        _check(self.mixed_precision in MIXED_PRECISION,
               f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        _check_positive(self, "batch_size", "gradient_accumulation_steps", "max_length",
                        "learning_rate", "log_steps")
        _check(self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}")
        _check(self.max_steps > 0 or self.epochs > 0, "set max_steps > 0 or epochs > 0")
        # bce and logit_mse are pointwise: a "group" of one document is a plain pair
        _check(self.group_size >= 2 or self.loss in ("bce", "logit_mse", "embed_mse"),
               f"group_size must be >= 2 for loss {self.loss!r} (it compares documents within a group)")
        _check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}")
        _check(8 <= self.max_length <= 8192, f"max_length must be in [8, 8192], got {self.max_length}")
        _check(self.learning_rate < 1.0, f"learning_rate {self.learning_rate} is absurd; try 2e-5..2e-4")
        _check_fraction(self, "warmup_ratio")
        for name in ("save_steps", "eval_steps", "num_layers", "weight_decay", "max_grad_norm", "warmup_steps"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0")
        _check(0 <= self.num_workers <= 32, f"num_workers must be in [0, 32], got {self.num_workers}")
        _check(not self.push_to_hub or (self.push_to_hub.count("/") == 1 and all(self.push_to_hub.split("/"))),
               f"push_to_hub must be a hub repo id like user/name, got {self.push_to_hub!r}")
        _check_passages(self)
        _check(self.save_total_limit >= 1, "save_total_limit must be >= 1")
        _check(self.eval_steps == 0 or bool(self.eval_data), "eval_steps > 0 needs eval_data")
        _check(0.05 <= self.temperature <= 100, f"temperature must be in [0.05, 100], got {self.temperature}")
        _check(self.distance in ("cosine", "euclidean"), f"distance must be cosine or euclidean, got {self.distance!r}")
        _check(self.pooling in ("mean", "cls"), f"pooling must be mean or cls, got {self.pooling!r}")
        _check(0 < self.scale <= 1000, f"scale must be in (0, 1000], got {self.scale}")
        _check_encoder(self.encoder, self.loss, self.task)
        _check(self.targets in LTR_TARGETS, f"targets must be labels, scores, ranks or empty, got {self.targets!r}")
        _check(not self.targets or self.loss in LTR_LOSSES, f"targets applies to the LTR losses {LTR_LOSSES}")
        _check(self.lambda_scheme in ("ndcg2pp", "lambdarank", "ndcg2", "ndcg1", "none"),
               f"lambda_scheme must be ndcg2pp, lambdarank, ndcg2, ndcg1 or none, got {self.lambda_scheme!r}")


def _check_encoder(encoder: str, loss: str, task: str = "rerank") -> None:
    _check(encoder in ENCODERS, f"encoder must be 'cross', 'bi' or empty (the loss decides), got {encoder!r}")
    _check(encoder != "cross" or loss not in BI_ONLY_LOSSES,
           f"loss={loss} trains a bi-encoder; drop encoder=cross, or pick a cross-encoder loss (listwise, bce, ...)")
    _check(encoder != "bi" or loss in (*BI_ONLY_LOSSES, *SOFT_LOSSES, *LTR_LOSSES),
           f"a bi-encoder trains with loss mnrl or triplet (binary labels), kl, margin_mse, logit_mse or an LTR "
           "loss (a teacher's soft labels), or embed_mse or embed_kl (a teacher bi-encoder, online), not "
           f"{loss!r}")
    _check(not encoder or task == "rerank", f"encoder={encoder} applies to rerankers, not task={task}")


@dataclass(frozen=True)
class DistillConfig:
    """``distilrank distill-mlm``: a DistilBERT-style student from a teacher's layers, trained by MLM KD."""

    data: str = ""  # .txt / .jsonl files, WikiExtractor folders, comma-separated lists, or a hub dataset name
    data_config: str = ""  # hub dataset config, e.g. 20231101.en for wikimedia/wikipedia
    data_split: str = "train"
    text_field: str = "text"  # jsonl: the text field; comma-separated fields, each a string or list, all read
    min_words: int = 20  # WikiExtractor documents with fewer words are stubs and dropped
    max_blocks: int = 0  # 0: the whole corpus; N: stop after N blocks (bounds an endless hub stream)
    teacher: str = DEFAULT_MODEL
    student: str = ""  # empty: build from the teacher's layers; else a masked-LM checkpoint with the same vocabulary
    layers: tuple[int, ...] = ()  # teacher layers copied into the student; empty: every other (first and last kept)
    architecture: str = "same"  # "same" as the teacher, or "distilbert" (DistilBertForMaskedLM from a BERT teacher)
    teacher_head: str = "fit"  # teacher without an MLM head: "fit" it first (encoder frozen) or "skip_kl"
    head_fit_steps: int = 300
    head_fit_lr: float = 1e-3
    output_dir: str = "runs/distill"
    cache_dir: str = ""  # tokenized blocks; empty: <output_dir>/cache
    block_size: int = 128
    eval_blocks: int = 256  # held-out blocks for MLM loss and accuracy
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    temperature: float = 2.0
    alpha_ce: float = 5.0  # KL between temperature-softened teacher and student MLM distributions
    alpha_mlm: float = 2.0  # MLM cross-entropy
    alpha_cos: float = 1.0  # cosine loss between last hidden states
    max_steps: int = 0  # 0: run `epochs` epochs instead
    epochs: float = 1.0
    batch_size: int = 32  # blocks per optimizer step
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 5.0
    mixed_precision: str = "no"
    seed: int = 42
    save_steps: int = 0
    save_total_limit: int = 2
    eval_steps: int = 0  # 0: evaluate at the end only
    log_steps: int = 10
    resume: bool = False

    def __post_init__(self) -> None:
        _check(bool(self.data), "data is required: text files, a WikiExtractor folder or a hub dataset name")
        _check(self.architecture in STUDENT_ARCHITECTURES,
               f"architecture must be one of {STUDENT_ARCHITECTURES}, got {self.architecture!r}")
        _check(self.teacher_head in TEACHER_HEAD, f"teacher_head must be one of {TEACHER_HEAD}, got {self.teacher_head!r}")
        _check(self.mixed_precision in MIXED_PRECISION,
               f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        _check_positive(self, "batch_size", "gradient_accumulation_steps", "learning_rate", "head_fit_lr",
                        "temperature", "log_steps", "eval_blocks")
        _check(8 <= self.block_size <= 8192, f"block_size must be in [8, 8192], got {self.block_size}")
        _check(0.0 < self.mlm_probability < 1.0, f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        for name in ("alpha_ce", "alpha_mlm", "alpha_cos", "max_steps", "max_blocks", "min_words", "head_fit_steps",
                     "save_steps", "eval_steps", "weight_decay", "max_grad_norm"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _check(self.alpha_ce + self.alpha_mlm + self.alpha_cos > 0, "alpha_ce, alpha_mlm and alpha_cos are all 0")
        _check(self.max_steps > 0 or self.epochs > 0, "set max_steps > 0 or epochs > 0")
        _check(self.learning_rate < 1.0 and self.head_fit_lr < 1.0, "a learning rate >= 1 is absurd; try 1e-4..1e-3")
        _check(not (self.student and self.layers), "set either student (an existing model) or layers, not both")
        _check_fraction(self, "warmup_ratio")
        _check(self.save_total_limit >= 1, "save_total_limit must be >= 1")


@dataclass(frozen=True)
class LabelConfig:
    """``distilrank label``: score (query, document) pairs with a teacher and write soft labels as jsonl."""

    # a cross-encoder, seq2seq (monoT5-style) or causal-LM reranker folder; "a,b": an ensemble; mode=listwise: also a
    # rank_llm .json or TREC run file of published rankings
    teacher: str = ""
    data: str = ""  # groups/triplets jsonl, a BEIR folder, a TREC folder (run + topics + corpus) or a hub name
    split: str = "train"  # the qrels split of a BEIR folder whose queries are labelled
    first_stage: str = "bm25"  # BEIR folders: candidates from "bm25" (built on the fly) or a TREC run file
    top_k: int = 30  # candidates per query taken from a first-stage run
    max_queries: int = 0  # 0: all queries
    output: str = "labels.jsonl"
    shard: str = "0/1"  # "i/n": this process labels the i-th of n equal slices (0-based); output gets .i-of-n
    batch_size: int = 64
    max_length: int = 0  # 0: the teacher's own
    bf16: bool = False  # score in bfloat16 (GPUs); fp32 otherwise
    chunk_size: int = 4096  # pairs scored and flushed to disk together: the most a kill can lose
    # causal-LM (decoder-only) teachers: the prompt with {query} and {document}, and the answer tokens whose logits
    # at the last position are the labels; "": the folder's distilrank_causal.json, else Qwen3-Reranker's prompt, yes/no
    template: str = ""
    true_token: str = ""
    false_token: str = ""
    # mode=listwise: a causal LM orders windows of `window` passages sliding by `stride` (RankZephyr prompt), or
    # teacher is a file of published rankings (rank_llm .json, TREC run); backend=vllm generates with vLLM
    mode: str = "pointwise"
    window: int = 20
    stride: int = 10
    backend: str = "transformers"
    tensor_parallel_size: int = 1
    # how the model scores: "" its folder's own kind (a folder without a scoring head is refused), "bi" the cosine
    # of mean/CLS-pooled embeddings (any encoder, e.g. a distill-mlm student zero-shot), "cross" a cross-encoder
    encoder: str = ""
    allow_new_head: bool = False  # encoder=cross on a folder without a classifier: score with a random head

    def __post_init__(self) -> None:
        _check_scoring(self)
        _check(bool(self.teacher), "teacher is required: a saved cross-encoder or seq2seq reranker folder")
        _check(bool(self.data), "data is required: groups jsonl, a BEIR or TREC folder, or a hub name")
        _check(bool(self.output), "output is required: the jsonl file to write")
        _check_positive(self, "top_k", "batch_size", "chunk_size")
        _check(self.max_queries >= 0 and self.max_length >= 0, "max_queries and max_length must be >= 0")
        index, n = parse_shard(self.shard)
        _check(0 <= index < n, f"shard {self.shard!r}: the index must be in [0, {n - 1}] (0-based)")
        _check(self.mode in ("pointwise", "listwise"), f"mode must be pointwise or listwise, got {self.mode!r}")
        _check(self.window >= 2 and 1 <= self.stride <= self.window,
               f"window must be >= 2 and stride in [1, window], got window={self.window} stride={self.stride}")
        _check(self.backend in ("transformers", "vllm"), f"backend must be transformers or vllm, got {self.backend!r}")
        _check(self.tensor_parallel_size >= 1, f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        _check(self.mode == "pointwise" or "," not in self.teacher, "teacher ensembles (teacher=a,b) label pointwise")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``: the 0-based index of this process's slice and the number of slices."""
    index, sep, total = str(text).partition("/")
    try:
        i, n = int(index), int(total)
    except ValueError:
        raise ConfigError(f"shard must look like i/n, e.g. 0/4 (0-based index / number of shards), got {text!r}") from None
    if not sep or n < 1:
        raise ConfigError(f"shard must look like i/n with n >= 1, got {text!r}")
    return i, n


@dataclass(frozen=True)
class ExportConfig:
    """``distilrank export``: a trained cross-encoder to ONNX (fp32, or dynamically quantised to int8)."""

    model: str = ""  # a saved cross-encoder folder
    output_dir: str = ""  # the ONNX folder: model.onnx, config, tokenizer (Reranker.load reads it)
    quantize: str = "none"  # "none" (fp32) or "int8" (onnxruntime dynamic quantisation)
    opset: int = 17
    max_length: int = 0  # 0: the length the model was trained with
    parity_data: str = "demo"  # dataset spec whose (query, document) pairs check the export
    parity_pairs: int = 200  # pairs scored by PyTorch and ONNX for the printed parity check

    def __post_init__(self) -> None:
        _check(bool(self.model), "model is required: a saved cross-encoder folder")
        _check(bool(self.output_dir), "output_dir is required: the folder to write the ONNX model to")
        _check(self.quantize in ("none", "int8"), f"quantize must be 'none' or 'int8', got {self.quantize!r}")
        _check(11 <= self.opset <= 23, f"opset must be in [11, 23], got {self.opset}")
        _check(self.max_length >= 0, "max_length must be >= 0 (0: the model's own)")
        _check_positive(self, "parity_pairs")


@dataclass(frozen=True)
class ServeConfig:
    """``distilrank serve``: an HTTP rerank API (Cohere/Jina/vLLM/Infinity shapes) over one model loaded at start-up."""

    model: str = ""  # a saved reranker folder (PyTorch or ONNX); never taken from a request
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "auto"  # "auto" (ONNX when the folder holds model.onnx), "torch" or "onnx"
    batch_size: int = 0  # pairs per forward pass; 0: 8 on CPU, 64 on GPU
    max_documents: int = 1000  # documents per request; more -> 413
    max_document_chars: int = 20_000  # characters per document; more -> 413
    max_query_chars: int = 2_000
    max_body_bytes: int = 5_000_000  # request body; more -> 413
    batch_wait_ms: float = 2.0  # how long a request waits for others to share its scoring batch
    # relevance_score: "raw" (the model's score) or "sigmoid" (a cross-encoder's logit in (0, 1), Cohere's range)
    score_scale: str = "raw"
    # documents longer than max_length: "firstp" (truncate), "maxp" (best of overlapping passages), "": the model's own
    long_documents: str = ""
    passage_stride: int = 0  # document tokens shared by neighbouring passages (0: the model's own, default 64)
    max_passages: int = -1  # passages scored per document with maxp (0: all; -1: the model's own, default 16)

    def __post_init__(self) -> None:
        _check_passages(self)
        _check(bool(self.model), "model is required: a saved reranker folder")
        _check(self.backend in ("auto", "torch", "onnx"), f"backend must be auto, torch or onnx, got {self.backend!r}")
        _check(0 < self.port < 65536, f"port must be in [1, 65535], got {self.port}")
        _check(self.batch_size >= 0, f"batch_size must be >= 0 (0: 8 on CPU, 64 on GPU), got {self.batch_size}")
        _check_positive(self, "max_documents", "max_document_chars", "max_query_chars",
                        "max_body_bytes")
        _check(0 <= self.batch_wait_ms <= 1000, f"batch_wait_ms must be in [0, 1000], got {self.batch_wait_ms}")
        _check(self.score_scale in ("raw", "sigmoid"), f"score_scale must be raw or sigmoid, got {self.score_scale!r}")


@dataclass(frozen=True)
class EvalConfig:
    """``distilrank eval``: rerank a first-stage run and score it with ir-measures."""

    data: str = "demo"
    model: str = ""  # empty: report the first stage only
    split: str = "test"
    first_stage: str = "bm25"  # "bm25" (built on the fly) or a TREC / rank_llm JSON run file
    top_k: int = 100
    batch_size: int = 0  # pairs per forward pass; 0: 8 on CPU, 64 on GPU
    max_length: int = 0  # 0: the length the model was trained with
    max_queries: int = 0  # 0: all judged queries
    fusion_weight: float = 0.0  # weight of the z-normalised first-stage score in the final score
    relevance_level: int = 1  # minimum grade counted relevant by MRR/MAP/Recall (TREC DL uses 2)
    output_dir: str = ""  # empty: print only
    # suites (data = comma-separated specs, or a NanoBEIR name): add relevant documents the first stage
    # missed to the reranked candidates (off: the honest setting; the report says which was used)
    inject_relevant: bool = False
    # documents longer than max_length: "firstp" (truncate), "maxp" (best of overlapping passages), "": the model's own
    long_documents: str = ""
    passage_stride: int = 0  # document tokens shared by neighbouring passages (0: the model's own, default 64)
    max_passages: int = -1  # passages scored per document with maxp (0: all; -1: the model's own, default 16)
    # how the model scores: "" its folder's own kind (a folder without a scoring head is refused), "bi" the cosine
    # of mean/CLS-pooled embeddings (any encoder, e.g. a distill-mlm student zero-shot), "cross" a cross-encoder
    encoder: str = ""
    allow_new_head: bool = False  # encoder=cross on a folder without a classifier: score with a random head

    def __post_init__(self) -> None:
        _check_scoring(self)
        _check(bool(self.data), "data is required: a BEIR folder, TREC folder, 'demo' or hub name")
        _check_passages(self)
        _check_positive(self, "top_k")
        _check(self.batch_size >= 0, f"batch_size must be >= 0 (0: 8 on CPU, 64 on GPU), got {self.batch_size}")
        _check(self.max_length >= 0, "max_length must be >= 0 (0: the model's own)")
        _check(self.max_queries >= 0, "max_queries must be >= 0")
        _check(self.relevance_level >= 1, "relevance_level must be >= 1")
        _check_fraction(self, "fusion_weight")


@dataclass(frozen=True)
class SpeedConfig:
    """``distilrank speed``: models score the same first-stage pairs in one process, interleaved: a speed comparison."""

    models: tuple[str, ...] = ()  # model folders (or packaged:NAME)
    names: tuple[str, ...] = ()  # their labels in the table (default: the model paths)
    reference: str = ""  # the label whose speed is 1.00x (empty: the first model)
    data: str = "demo"  # the dataset whose first-stage candidates are scored (as `distilrank eval` reads it)
    split: str = "test"
    first_stage: str = "bm25"  # "bm25" (or the folder's own run) or a TREC / rank_llm JSON run file
    top_k: int = 100
    pairs: int = 1000  # the first N (query, passage) pairs of the first stage's candidates, in query order
    repeats: int = 3  # timed passes per model; the order of the models alternates each pass; the median counts
    batch_size: int = 0  # pairs per forward pass; 0: 8 on CPU, 64 on GPU
    max_length: int = 0  # 0: the length the model was trained with
    encoder: str = ""  # as `distilrank eval`: "" the folder's own kind, "bi" or "cross"
    allow_new_head: bool = False
    output_dir: str = ""  # empty: print only

    def __post_init__(self) -> None:
        _check_scoring(self)
        _check(bool(self.models), "models is required: the model folders to time, e.g. "
               "models=runs/x/teacher/model,runs/x/student/model")
        _check(not self.names or len(self.names) == len(self.models),
               f"names gives {len(self.names)} labels for {len(self.models)} models: give one per model, or none")
        labels = self.labels
        _check(len(set(labels)) == len(labels), "each model needs its own label: "
               + ("names repeats one" if self.names else "models repeats a path; give names=... to time it twice"))
        _check(not self.reference or self.reference in labels, f"reference {self.reference!r} is not one of the "
               f"models' labels ({', '.join(labels)}): name one of them, or leave it empty for the first")
        _check(bool(self.data), "data is required: a BEIR folder, TREC folder, 'demo' or hub name")
        _check_positive(self, "top_k", "pairs", "repeats")
        _check(self.batch_size >= 0, f"batch_size must be >= 0 (0: 8 on CPU, 64 on GPU), got {self.batch_size}")
        _check(self.max_length >= 0, "max_length must be >= 0 (0: the model's own)")

    @property
    def labels(self) -> list[str]:
        """Each model's label in the table: its name, or its path when names is empty."""
        return list(self.names or self.models)


@dataclass(frozen=True)
class MineConfig:
    """``distilrank mine``: hard negatives (BM25, dense or static retriever) per training query, as groups jsonl."""

    data: str = "demo"  # a BEIR/TREC folder, a hub name, or a groups .jsonl (then with retriever=given)
    split: str = "train"
    output: str = "negatives.jsonl"
    num_negatives: int = 6
    rank_min: int = 1  # ranks are 1-based and inclusive
    rank_max: int = 30
    sampling: str = "random"  # "random" within [rank_min, rank_max], or "top"
    seed: int = 42
    # "bm25", "dense" (bi-encoder + FAISS), "static" (model2vec + FAISS), or "given": a groups file's own negatives
    # are the candidates, in file order (filter and re-pick them, e.g. rescored by a model with a margin)
    retriever: str = "bm25"
    model: str = ""  # dense/static encoder; empty: the packaged MiniLM (static: distilled from it)
    index: str = "flat"  # FAISS index: "flat" (exact inner product), "ivf" or "hnsw" (approximate)
    index_path: str = ""  # folder of a saved FAISS index: loaded if present (checked against model), else saved
    nlist: int = 0  # ivf: clusters (0: 4*sqrt(documents))
    nprobe: int = 16  # ivf: clusters searched per query
    batch_size: int = 64  # texts encoded at once
    absolute_margin: float | None = None  # keep a negative only if score <= positive score - margin
    relative_margin: float | None = None  # keep a negative only if score <= positive score * (1 - margin)
    rescore_model: str = ""  # a model folder (cross-, bi-encoder...) that rescores candidates; margins use its scores
    max_queries: int = 0  # 0: every judged query
    # 0: one group per (query, positive); k: at most k positives per query, the highest grades first (ties by
    # seed). Graded collections (NFCorpus: ~43 judged documents per query) otherwise give dozens of groups per
    # query, and groups of one query in one batch are each other's false in-batch negatives (mnrl)
    max_positives: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, "num_negatives", "rank_min", "batch_size", "nprobe")
        _check(self.rank_max >= self.rank_min, "rank_max must be >= rank_min")
        _check(self.sampling in ("random", "top"), f"sampling must be 'random' or 'top', got {self.sampling!r}")
        _check(self.retriever in ("bm25", "dense", "static", "given"),
               f"retriever must be bm25, dense, static or given, got {self.retriever!r}")
        _check(self.retriever != "given" or self.rescore_model or
               (self.absolute_margin is None and self.relative_margin is None),
               "retriever=given has no scores to apply a margin to: set rescore_model too")
        _check(self.index in ("flat", "ivf", "hnsw"), f"index must be flat, ivf or hnsw, got {self.index!r}")
        _check(self.nlist >= 0 and self.max_queries >= 0 and self.max_positives >= 0,
               "nlist, max_queries and max_positives must be >= 0")
        _check(self.relative_margin is None or 0.0 <= self.relative_margin < 1.0,
               f"relative_margin must be in [0, 1), got {self.relative_margin}")
        _check(self.retriever not in ("bm25", "given") or not (self.model or self.index_path),
               f"model and index_path apply to retriever=dense or static, not {self.retriever}")


@dataclass(frozen=True)
class PushConfig:
    """``distilrank push``: a saved model + a generated model card (config, metrics, intended use) to the hub."""

    model: str = ""  # a saved model folder (its run's config.yaml and metrics.json, one level up, go in the card)
    repo_id: str = ""  # user/name on the Hugging Face hub
    private: bool = False
    metrics: str = ""  # a metrics.json for the card's table; empty: <model>/../metrics.json when present
    token_env: str = "HF_TOKEN"  # environment variable holding the token (else the saved login is used)

    def __post_init__(self) -> None:
        _check(bool(self.model), "model is required: a saved model folder")
        _check(self.repo_id.count("/") == 1 and all(self.repo_id.split("/")),
               f"repo_id must look like user/name, got {self.repo_id!r}")


@dataclass(frozen=True)
class RankConfig:
    """``distilrank rank``: score documents for one query with a trained reranker."""

    model: str = ""
    query: str = ""
    documents: str = ""  # a text file, one document per line
    top_k: int = 10
    batch_size: int = 0  # pairs per forward pass; 0: 8 on CPU, 64 on GPU
    max_length: int = 0  # 0: the length the model was trained with
    # documents longer than max_length: "firstp" (truncate), "maxp" (best of overlapping passages), "": the model's own
    long_documents: str = ""
    passage_stride: int = 0  # document tokens shared by neighbouring passages (0: the model's own, default 64)
    max_passages: int = -1  # passages scored per document with maxp (0: all; -1: the model's own, default 16)
    # how the model scores: "" its folder's own kind (a folder without a scoring head is refused), "bi" the cosine
    # of mean/CLS-pooled embeddings (any encoder, e.g. a distill-mlm student zero-shot), "cross" a cross-encoder
    encoder: str = ""
    allow_new_head: bool = False  # encoder=cross on a folder without a classifier: score with a random head

    def __post_init__(self) -> None:
        _check_scoring(self)
        _check(bool(self.model), "model is required (a saved reranker folder)")
        _check_passages(self)
        _check(bool(self.query.strip()), "query is required and must not be empty")
        _check(bool(self.documents), "documents is required: a text file with one document per line")
        _check_positive(self, "top_k")
        _check(self.batch_size >= 0, f"batch_size must be >= 0 (0: 8 on CPU, 64 on GPU), got {self.batch_size}")
        _check(self.max_length >= 0, "max_length must be >= 0 (0: the model's own)")


@dataclass(frozen=True)
class DemoConfig:
    """``distilrank demo``: the whole pipeline offline on the embedded dataset."""

    output_dir: str = ""  # empty: a fresh folder distilrank-demo-<time>
    model: str = DEFAULT_MODEL  # the teacher of the distillation stage, or the reranker's start without it
    seed: int = 13
    # stage 1: distil a student from `model` on the demo corpus, then fine-tune the student (0: fine-tune `model`)
    distill_steps: int = 150
    student_layers: tuple[int, ...] = ()  # teacher layers the student keeps; empty: every other (first and last kept)
    distill_batch_size: int = 16
    distill_learning_rate: float = 5e-4
    # distillation terms (distill-mlm's alpha_ce/alpha_mlm/alpha_cos). The demo keeps the cosine term only: it
    # preserves the mean-pooled embeddings the bi-encoder reranker scores with, and needs no MLM head (the
    # packaged teacher has none). alpha_ce=5 alpha_mlm=2 gives DistilBERT's mix (a head is fitted first).
    alpha_ce: float = 0.0
    alpha_mlm: float = 0.0
    alpha_cos: float = 1.0
    head_fit_steps: int = 60  # with alpha_ce or alpha_mlm > 0: the packaged teacher's MLM head is fitted first
    num_layers: int = 0
    # mnrl / triplet: fine-tune a bi-encoder reranker (cosine of the two embeddings); listwise, bce, ...: a
    # cross-encoder (`distill_steps=0 loss=listwise learning_rate=1.5e-4`: the 6-layer cross-encoder)
    loss: str = "mnrl"
    max_steps: int = 200
    batch_size: int = 4
    group_size: int = 8
    max_length: int = 96
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    rank_max: int = 30
    top_k: int = 20
    test_queries: int = 250
    fusion_weight: float = 0.3  # weight of BM25 in the extra fused row (0: no fused row)

    def __post_init__(self) -> None:
        _check_positive(self, "max_steps", "batch_size", "max_length", "top_k", "test_queries",
                        "distill_batch_size", "distill_learning_rate")
        _check(self.distill_steps >= 0 and self.head_fit_steps >= 0, "distill_steps and head_fit_steps must be >= 0")
        _check(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
        _check(self.loss not in SOFT_LOSSES, f"the demo trains on BM25-mined binary labels; loss={self.loss} "
                                             "learns a teacher's soft labels (use distilrank label + train)")
        _check_fraction(self, "fusion_weight", "warmup_ratio")
        for name in ("alpha_ce", "alpha_mlm", "alpha_cos"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0")
        _check(self.distill_steps == 0 or self.alpha_ce + self.alpha_mlm + self.alpha_cos > 0,
               "alpha_ce, alpha_mlm and alpha_cos are all 0: distillation would learn nothing")


@dataclass(frozen=True)
class CompareConfig:
    """``distilrank compare RUN_DIR...``: a table (and optional PNG chart) of finished training runs."""

    runs: tuple[str, ...] = ()  # run directories (what `distilrank train` wrote to output_dir)
    output: str = ""  # a PNG file for the bar chart (empty: print the table only)

    def __post_init__(self) -> None:
        _check(bool(self.runs), "give at least one run directory: distilrank compare runs/a runs/b")
        _check(not self.output or self.output.lower().endswith(".png"), f"output must be a .png file, got {self.output!r}")


# ---------------------------------------------------------------- loading

def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], name)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            number = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and isinstance(value, float) and number != value:
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return number
    if tp is str:
        return "" if value is None else str(value)
    if origin is tuple:  # tuple[int, ...]: a YAML list, or "0,2,4" / "[0, 2, 4]" from the command line
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).strip("[]() ").split(",") if v.strip()]
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, typing.get_args(tp)[0], name) for v in items)
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["loss=bce", "max_steps=100"]`` -> ``{"loss": "bce", "max_steps": 100}`` (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value (e.g. max_steps=100)")
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip().replace("-", "_")] = raw
    return out


def build_config(cls: type[C], values: dict[str, Any]) -> C:
    """Create ``cls`` from a mapping, coercing types and naming unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            tip = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown {cls.__name__} key '{key}'{tip}")
        kwargs[key] = _coerce(value, hints[key], key)
    return cls(**kwargs)


def _read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not valid UTF-8 ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:  # one line: file:line:column, what is wrong
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        context = getattr(exc, "context", None)
        raise ConfigError(f"{where}: not valid YAML: {problem}" + (f" ({' '.join(context.split())})" if context
                                                                   else "")) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of key: value at the top level")
    return dict(loaded or {})


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Load ``cls`` from an optional YAML file, then apply ``key=value`` overrides."""
    values: dict[str, Any] = _read_yaml(path) if path else {}
    values.update(parse_overrides(overrides or []))
    return build_config(cls, values)


def load_stages(path: str | Path | None, overrides: list[str] | None = None) -> list[tuple[str, TrainConfig]]:
    """Training stages from a YAML file: shared TrainConfig keys at the top, a ``stages:`` list below.

    Each stage is a mapping with an optional ``name`` (default ``stage1``, ``stage2``, ...) and its
    own TrainConfig keys, which win over the shared ones; ``key=value`` overrides win over both, in
    every stage. Stage k > 0 starts from stage k-1's ``output_dir/model`` unless the stage sets
    ``model`` itself (a shared or overridden ``model`` is the first stage's start). A stage without
    its own ``output_dir`` writes to ``<shared output_dir>/<name>`` (an ``output_dir=...`` override
    is that root for every stage). Every stage is validated here,
    before any compute. A file without ``stages`` (or no file) gives one stage named ``""``: exactly
    what :func:`load_config` gives.

    Example (two InRanker-style stages)::

        model: t5-small
        loss: logit_mse
        output_dir: runs/inranker
        stages:
          - {name: msmarco, train_file: msmarco-labels.jsonl, max_steps: 10000}
          - {name: target, train_file: target-labels.jsonl, learning_rate: 3.0e-5}
    """
    values: dict[str, Any] = _read_yaml(path) if path else {}
    over = parse_overrides(overrides or [])
    if "stages" not in values:
        return [("", build_config(TrainConfig, {**values, **over}))]
    where = f"{path}: stages"
    stages = values.pop("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{where} must be a non-empty list of mappings (- name: ..., train_file: ...)")
    out: list[tuple[str, TrainConfig]] = []
    for k, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise ConfigError(f"{where}[{k}] must be a mapping of key: value, got {stage!r}")
        own = dict(stage)
        name = str(own.pop("name", f"stage{k + 1}")).strip()
        if not name or any(c in name for c in "/\\") or name in (n for n, _ in out):
            raise ConfigError(f"{where}[{k}]: name {name!r} must be non-empty, unique and without slashes")
        merged = {**values, **own, **over}
        if "output_dir" in over or "output_dir" not in own:  # an overridden output_dir is every stage's root
            root = over.get("output_dir", values.get("output_dir", TrainConfig.output_dir))
            merged["output_dir"] = str(Path(str(root)) / name)
        if out:  # a shared or overridden model is where the first stage starts; later ones chain
            merged["model"] = own.get("model", str(Path(out[-1][1].output_dir) / "model"))
        try:
            cfg = build_config(TrainConfig, merged)
        except ConfigError as exc:
            raise ConfigError(f"{where}[{k}] ({name}): {exc}") from None
        out.append((name, cfg))
    dirs = [Path(cfg.output_dir).resolve() for _, cfg in out]
    for k, d in enumerate(dirs):
        if d in dirs[:k]:
            raise ConfigError(f"{where}: stages '{out[dirs.index(d)][0]}' and '{out[k][0]}' share output_dir "
                              f"{out[k][1].output_dir}; give each stage its own")
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain YAML-safe values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: Any, path: str | Path) -> None:
    from distilrank.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
