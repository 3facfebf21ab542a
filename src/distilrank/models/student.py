"""A DistilBERT-style student built from a teacher's layers (Sanh et al., 2019).

The student keeps the teacher's embeddings, a subset of its transformer layers (by default every
other one, first and last kept) and its MLM head, so it starts close to the teacher instead of
from scratch. ``architecture="distilbert"`` turns a BERT teacher into a ``DistilBertForMaskedLM``
(no segment embeddings, no pooler).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from distilrank.errors import ConfigError
from distilrank.io import atomic_dir
from distilrank.models.cross_encoder import resolve_model_path

logger = logging.getLogger(__name__)

ARCHITECTURES = ("same", "distilbert")
# Where each supported family keeps its layer stack, relative to the base model.
LAYER_STACKS = ("encoder.layer", "transformer.layer")
SUPPORTED = "BERT, RoBERTa, ELECTRA-style (encoder.layer) and DistilBERT (transformer.layer) models"
DISTILBERT_LAYER_NORM_EPS = 1e-12  # hard-coded in transformers' DistilBERT modules


def default_layers(num_teacher_layers: int) -> list[int]:
    """Half of the teacher's layers, spread evenly with the first and last kept.

    ``k = ceil(n / 2)`` indices ``round(i * (n - 1) / (k - 1))``; for 12 layers this is DistilBERT's
    ``[0, 2, 4, 7, 9, 11]``.
    """
    n = num_teacher_layers
    if n < 1:
        raise ConfigError(f"the teacher must have at least 1 layer, got {n}")
    k = math.ceil(n / 2)
    if k == 1:
        return [0]
    return [math.floor(i * (n - 1) / (k - 1) + 0.5) for i in range(k)]


def check_layers(layers: Sequence[int], num_teacher_layers: int) -> list[int]:
    """``layers`` as a list, or a ConfigError unless non-empty, in range and strictly increasing."""
    n, chosen = num_teacher_layers, [int(i) for i in layers]
    if not chosen:
        raise ConfigError(f"layers is empty: pick at least one of the teacher's {n} layers (0-{n - 1})")
    if any(not 0 <= i < n for i in chosen):
        raise ConfigError(f"layers {chosen} out of range: this teacher has {n} layers (0-{n - 1})")
    if any(a >= b for a, b in zip(chosen, chosen[1:])):
        raise ConfigError(
            f"layers {chosen} must be strictly increasing (no repeats), e.g. {default_layers(n)}"
        )
    return chosen


def load_teacher(
    name: str, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, bool]:
    """Load ``name`` as a masked-LM teacher: ``(model in eval mode, tokenizer, has_mlm_head)``.

    ``has_mlm_head`` is False when the checkpoint has no MLM head weights (e.g. a plain
    ``BertModel`` such as the packaged all-MiniLM-L6-v2): the head was freshly initialised and its
    logits are noise until trained; its decoder is still tied to the word embeddings.
    """
    path = resolve_model_path(name)
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load teacher '{name}' as a masked language model: {exc}. Pass a local folder "
            "with a BERT-style checkpoint, or 'packaged:all-MiniLM-L6-v2'."
        ) from None
    prefix = model.base_model_prefix + "."
    missing = sorted(info["missing_keys"])
    head_missing = [k for k in missing if not k.startswith(prefix)]
    body_missing = [k for k in missing if k.startswith(prefix)]
    if body_missing:
        logger.warning("teacher '%s' lacks %d encoder weights (randomly initialised): %s",
                       name, len(body_missing), ", ".join(body_missing[:5]))
    if head_missing:
        # info, not a warning: distill-mlm says what it does about it (fit the head, or skip the KL term), and
        # a cosine-only run never uses the head
        logger.info("teacher '%s' has no MLM head weights; the head is randomly initialised", name)
    _check_tied(model)
    return model.eval(), tokenizer, not head_missing


def _check_tied(model: PreTrainedModel) -> None:
    """Re-tie the MLM decoder to the word embeddings if the config asks for it and it is not."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if not getattr(model.config, "tie_word_embeddings", True) or out is None:
        return
    if out.weight is not inp.weight:
        model.tie_weights()
    if out.weight is not inp.weight:
        raise ConfigError(f"cannot tie the MLM decoder of {type(model).__name__} to its word embeddings")


def _layer_stack(model: PreTrainedModel) -> tuple[str, nn.ModuleList]:
    """The full module name and the ModuleList of ``model``'s transformer layers."""
    names = {id(m): n for n, m in model.named_modules()}
    for path in LAYER_STACKS:
        stack = model.base_model
        for attr in path.split("."):
            stack = getattr(stack, attr, None)
        if isinstance(stack, nn.ModuleList) and len(stack) == model.config.num_hidden_layers:
            return names[id(stack)], stack
    raise ConfigError(f"cannot build a student from {type(model).__name__}: supported teachers are {SUPPORTED}")


def build_student(
    teacher: PreTrainedModel, layers: Sequence[int], architecture: str = "same"
) -> PreTrainedModel:
    """A smaller masked-LM initialised from ``teacher``'s embeddings, chosen ``layers`` and MLM head.

    ``"same"``: the teacher's class with ``len(layers)`` layers. ``"distilbert"``: a
    ``DistilBertForMaskedLM`` from a BERT teacher (see :func:`_bert_to_distilbert`). The student is
    in train mode, on the teacher's device and dtype; the teacher is not changed.
    """
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown student architecture '{architecture}': choose one of {ARCHITECTURES}")
    prefix, _ = _layer_stack(teacher)
    layers = check_layers(layers, teacher.config.num_hidden_layers)
    if architecture == "distilbert" and teacher.config.model_type != "distilbert":
        student = _bert_to_distilbert(teacher, layers)
    else:  # a DistilBERT teacher's "distilbert" student is its "same" student
        student = _same_student(teacher, prefix, layers)
    return student.to(device=teacher.device, dtype=teacher.dtype).train()


def _same_student(teacher: PreTrainedModel, prefix: str, layers: list[int]) -> PreTrainedModel:
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)  # DistilBertConfig maps this to n_layers
    student = type(teacher)(config)
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix + "."):
            old, rest = key[len(prefix) + 1 :].split(".", 1)
            if int(old) not in new_index:
                continue
            key = f"{prefix}.{new_index[int(old)]}.{rest}"
        state[key] = value
    student.load_state_dict(state, strict=True)
    _check_tied(student)
    return student


def _bert_to_distilbert(teacher: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """Map a ``BertForMaskedLM`` onto a ``DistilBertForMaskedLM`` with the chosen layers.

    DistilBERT has no segment (token type) embeddings, so segment 0's embedding is folded into the
    position embeddings: single-segment inputs (all ``token_type_ids`` 0) give exactly the teacher's
    computation; tokens the teacher would see as segment 1 (the second text of a pair) now look like
    segment 0 and the student learns the difference in training.
    """
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    c = teacher.config
    if type(teacher).__name__ != "BertForMaskedLM":
        raise ConfigError(f"architecture='distilbert' needs a BERT masked-LM teacher, got {type(teacher).__name__} "
                          f"({c.model_type}); use architecture='same'")
    if getattr(c, "position_embedding_type", "absolute") != "absolute" or not isinstance(c.hidden_act, str):
        raise ConfigError("architecture='distilbert' needs a teacher with absolute position embeddings and a "
                          "named activation; use architecture='same'")
    if not math.isclose(c.layer_norm_eps, DISTILBERT_LAYER_NORM_EPS, rel_tol=1e-6):
        raise ConfigError(f"the teacher's layer_norm_eps is {c.layer_norm_eps}, DistilBERT's is fixed at "
                          f"{DISTILBERT_LAYER_NORM_EPS}: the student would not match it; use architecture='same'")
    config = DistilBertConfig(
        vocab_size=c.vocab_size, max_position_embeddings=c.max_position_embeddings, n_layers=len(layers),
        n_heads=c.num_attention_heads, dim=c.hidden_size, hidden_dim=c.intermediate_size,
        activation=c.hidden_act, dropout=c.hidden_dropout_prob, attention_dropout=c.attention_probs_dropout_prob,
        initializer_range=c.initializer_range, pad_token_id=c.pad_token_id,
    )
    t = teacher.state_dict()
    emb = "bert.embeddings."
    state = {
        "distilbert.embeddings.word_embeddings.weight": t[emb + "word_embeddings.weight"],
        # (P, H) + (H,): segment 0 folded in, see the docstring
        "distilbert.embeddings.position_embeddings.weight":
            t[emb + "position_embeddings.weight"] + t[emb + "token_type_embeddings.weight"][0],
        "distilbert.embeddings.LayerNorm.weight": t[emb + "LayerNorm.weight"],
        "distilbert.embeddings.LayerNorm.bias": t[emb + "LayerNorm.bias"],
        "vocab_transform.weight": t["cls.predictions.transform.dense.weight"],
        "vocab_transform.bias": t["cls.predictions.transform.dense.bias"],
        "vocab_layer_norm.weight": t["cls.predictions.transform.LayerNorm.weight"],
        "vocab_layer_norm.bias": t["cls.predictions.transform.LayerNorm.bias"],
        "vocab_projector.weight": t[emb + "word_embeddings.weight"],  # tied
        "vocab_projector.bias": t["cls.predictions.bias"],
    }
    names = {"attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
             "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
             "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense",
             "ffn.lin2": "output.dense", "output_layer_norm": "output.LayerNorm"}
    for new, old in enumerate(layers):
        for dst, src in names.items():
            for p in ("weight", "bias"):
                state[f"distilbert.transformer.layer.{new}.{dst}.{p}"] = t[f"bert.encoder.layer.{old}.{src}.{p}"]
    student = DistilBertForMaskedLM(config)
    student.load_state_dict(state, strict=True)
    _check_tied(student)
    return student


def save_student(student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> None:
    """Write ``student`` and ``tokenizer`` as one Hugging Face folder, atomically.

    For a DistilBERT student the saved tokenizer returns only ``input_ids`` and ``attention_mask``:
    DistilBERT takes no ``token_type_ids``, and loaders such as ``sentence_transformers.CrossEncoder``
    pass the model whatever the tokenizer returns. The caller's tokenizer is left unchanged (it may
    still serve the BERT teacher).
    """
    if student.config.model_type == "distilbert":
        tokenizer = copy.deepcopy(tokenizer)
        names = ["input_ids", "attention_mask"]
        tokenizer.model_input_names = names
        # save_pretrained writes only keys of init_kwargs into tokenizer_config.json
        tokenizer.init_kwargs["model_input_names"] = names
    with atomic_dir(folder) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def mlm_parts(model: PreTrainedModel) -> tuple[Callable[..., Tensor], Callable[[Tensor], Tensor]]:
    """Split a masked LM into ``(encode, head)`` so the vocabulary projection runs only where needed.

    ``encode(input_ids, attention_mask)`` -> ``(B, L, H)`` last hidden states;
    ``head(hidden)`` -> ``(N, V)`` logits for ``(N, H)`` hidden states (e.g. the ~15% masked
    positions), instead of ``(B, L, V)`` for every token.
    """
    kind = type(model).__name__
    if not kind.endswith("ForMaskedLM"):
        raise ConfigError(f"mlm_parts needs a *ForMaskedLM model, got {kind}")
    if hasattr(model, "bert") and hasattr(model, "cls"):
        body, head = model.bert, model.cls
    elif hasattr(model, "roberta") and hasattr(model, "lm_head"):
        body, head = model.roberta, model.lm_head
    elif hasattr(model, "electra") and hasattr(model, "generator_lm_head"):
        body = model.electra
        head = lambda h: model.generator_lm_head(model.generator_predictions(h))
    elif hasattr(model, "distilbert") and hasattr(model, "vocab_projector"):
        body = model.distilbert
        head = lambda h: model.vocab_projector(
            model.vocab_layer_norm(model.activation(model.vocab_transform(h))))
    else:
        raise ConfigError(f"mlm_parts does not know the layout of {kind}: supported are BERT, RoBERTa, "
                          "ELECTRA and DistilBERT masked LMs")

    def encode(input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)

    return encode, head


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


class MaskedLM(nn.Module):
    """A masked LM whose forward returns last hidden states and MLM logits at chosen positions only.

    Wrapping (rather than calling ``mlm_parts`` from the loss) keeps the forward inside the module
    that Accelerate prepares, so DDP sees it.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        mlm_parts(model)  # fail now on an unsupported architecture

    def forward(self, input_ids: Tensor, attention_mask: Tensor,
                positions: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        encode, head = mlm_parts(self.model)  # looked up per call: holding them would register the head twice
        hidden = encode(input_ids, attention_mask)  # (B, L, H)
        logits = head(hidden[positions]) if positions is not None else None  # (N, V) for N chosen positions
        return hidden, logits

    def freeze_encoder(self) -> None:
        """Train only the MLM head (not the word embeddings its decoder is tied to); the encoder stays in eval mode."""
        self.encoder_frozen = True
        for p in self.model.base_model.parameters():
            p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> MaskedLM:
        super().train(mode)
        if getattr(self, "encoder_frozen", False):  # no dropout in a frozen encoder: the head fits its real output
            self.model.base_model.eval()
        return self

    def freeze_head(self) -> None:
        """Train only the encoder (used when no loss term reads MLM logits)."""
        body = {id(p) for p in self.model.base_model.parameters()}
        for p in self.model.parameters():
            if id(p) not in body:
                p.requires_grad_(False)
