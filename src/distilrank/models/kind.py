"""What a model folder (or hub name) is, decided in one place, and the scorer every command loads from it.

:func:`detect_model_kind` reads only small files (``config.json``, ``modules.json``, markers), never the
weights. :func:`load_scorer` turns a kind plus the user's ``encoder`` / ``allow_new_head`` settings into a
scorer, and refuses a folder whose scoring head would be newly initialised (random scores) unless asked.
"""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilrank.errors import ConfigError
from distilrank.models.cross_encoder import resolve_model_path

if TYPE_CHECKING:
    import torch

    from distilrank.models.bi_encoder import BiEncoder
    from distilrank.models.cross_encoder import CrossEncoder
    from distilrank.models.seq2seq import Seq2SeqReranker

logger = logging.getLogger(__name__)

ENCODER_CHOICES = ("", "bi", "cross")
BI_MARKER = "bi_encoder.json"  # written by BiEncoder.save_pretrained
ONNX_FILE = "model.onnx"


class ModelKind(str, Enum):
    """What a folder holds, and so how it scores a (query, document) pair."""

    CROSS_ENCODER = "cross_encoder"  # a sequence-classification checkpoint (ours, or any HF one)
    ST_CROSS_ENCODER = "st_cross_encoder"  # saved by sentence_transformers.CrossEncoder
    BI_ENCODER = "bi_encoder"  # saved by distilrank's BiEncoder (bi_encoder.json)
    ST_BI_ENCODER = "st_bi_encoder"  # a sentence-transformers embedding model (modules.json with Pooling)
    SEQ2SEQ = "seq2seq"  # an encoder-decoder (T5 family): monoT5-style scoring
    ONNX = "onnx"  # written by `distilrank export` (model.onnx)
    CAUSAL_LM = "causal_lm"  # a decoder-only language model: scored by its yes/no logits (models/causal.py)
    ENCODER = "encoder"  # a plain encoder without a scoring head (a bare model, a masked LM, a distill-mlm student)

    @property
    def has_head(self) -> bool:
        """Whether the folder scores pairs as it is (no newly initialised weights)."""
        return self not in (ModelKind.ENCODER, ModelKind.CAUSAL_LM)

    @property
    def is_bi_encoder(self) -> bool:
        return self in (ModelKind.BI_ENCODER, ModelKind.ST_BI_ENCODER)


def _find(name: str, filename: str) -> Path | None:
    """``filename`` inside a local folder, or in the hub cache for a hub name; None when absent."""
    folder = Path(name)
    if folder.is_dir():
        return folder / filename if (folder / filename).is_file() else None
    try:
        from transformers.utils import cached_file

        found = cached_file(name, filename, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None
    return Path(found) if found else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); the model folder is damaged") from None


def st_modules(name: str) -> list[dict[str, Any]]:
    """The module list of a sentence-transformers folder (``modules.json``); [] when there is none."""
    found = _find(name, "modules.json")
    modules = _read_json(found) if found else []
    if not isinstance(modules, list):
        raise ConfigError(f"{found}: expected a list of modules")
    return modules


def _module_types(modules: list[dict[str, Any]]) -> list[str]:
    return [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]


def transformer_folder(name: str) -> str:
    """Where the transformer weights of ``name`` live: the folder itself, or an old-style
    sentence-transformers ``0_Transformer`` sub-folder named by ``modules.json``."""
    path = resolve_model_path(str(name))
    for module in st_modules(path):
        sub = str(module.get("path", ""))
        if _module_types([module])[0] == "Transformer" and sub and Path(path).is_dir():
            return str(Path(path) / sub)
    return path


def detect_model_kind(name_or_path: str | Path, *, onnx: bool = True) -> ModelKind:
    """What ``name_or_path`` is, read from its small files (never its weights).

    ``onnx=False`` ignores a ``model.onnx`` beside PyTorch weights (what ``backend=torch`` scores).
    Raises :class:`ConfigError` when the folder has no ``config.json`` or cannot be found.
    """
    name = str(name_or_path)
    path = resolve_model_path(name)
    if onnx and _find(path, ONNX_FILE):
        return ModelKind.ONNX
    if _find(path, BI_MARKER):
        return ModelKind.BI_ENCODER
    config_file = _find(transformer_folder(path), "config.json")
    if config_file is None:
        where = f"folder {name}" if Path(path).is_dir() else f"model '{name}'"
        raise ConfigError(f"cannot load {where}: no config.json there (and no cached hub model of that name). "
                          "Pass a saved model folder, or the embedded default 'packaged:all-MiniLM-L6-v2'")
    config = _read_json(config_file)
    architectures = [str(a) for a in config.get("architectures") or []]
    if config.get("is_encoder_decoder"):
        return ModelKind.SEQ2SEQ
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        st_cross = _find(path, "config_sentence_transformers.json")
        st_info = _read_json(st_cross) if st_cross else {}
        if st_info.get("model_type") == "CrossEncoder" or ("sentence_transformers" in config and
                                                            "distilrank_passages" not in config):
            return ModelKind.ST_CROSS_ENCODER
        return ModelKind.CROSS_ENCODER
    if "Pooling" in _module_types(st_modules(path)):
        return ModelKind.ST_BI_ENCODER
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return ModelKind.CAUSAL_LM
    return ModelKind.ENCODER


def _no_head_message(name: str, kind: ModelKind) -> str:
    what = {ModelKind.ENCODER: "a plain encoder with no scoring head (e.g. a distill-mlm student or a bare model)",
            ModelKind.BI_ENCODER: "a bi-encoder (no classification head)",
            ModelKind.ST_BI_ENCODER: "a sentence-transformers embedding model (no classification head)",
            ModelKind.CAUSAL_LM: "a decoder-only language model"}[kind]
    return (f"{name} is {what}: scoring it as a cross-encoder would use a newly initialised, random classifier. "
            "Score it zero-shot as a bi-encoder with encoder=bi, train a cross-encoder from it with "
            "`distilrank train model=...`, or pass encoder=cross allow_new_head=true if you really mean a random head")


def check_encoder(encoder: str) -> None:
    if encoder not in ENCODER_CHOICES:
        raise ConfigError(f"encoder must be 'bi' (cosine of pooled embeddings), 'cross' or empty (the folder's own "
                          f"kind), got {encoder!r}")


def scorer_kind(name: str, kind: ModelKind, encoder: str = "", allow_new_head: bool = False) -> str:
    """How ``name`` of ``kind`` is scored given the settings: "cross", "bi", "seq2seq" or "causal" (else an error)."""
    check_encoder(encoder)
    if kind == ModelKind.ONNX:
        raise ConfigError(f"{name} is an ONNX export; load it with Reranker.load (backend onnx or auto)")
    if kind == ModelKind.CAUSAL_LM and not encoder:
        return "causal"  # a pointwise LLM reranker (Qwen3-Reranker style): yes/no logits at the last position
    if kind == ModelKind.CAUSAL_LM and not (encoder == "cross" and allow_new_head):
        raise ConfigError(f"{name} is a decoder-only language model, scored by its yes/no answer logits; drop "
                          f"encoder={encoder} to score it so")
    if kind == ModelKind.SEQ2SEQ:
        if encoder == "bi":
            raise ConfigError(f"{name} is a seq2seq (T5-family) model; encoder=bi pools an encoder-only model. "
                              "Drop encoder=bi to score it monoT5-style")
        return "seq2seq"
    if encoder == "bi" or (not encoder and kind.is_bi_encoder):
        return "bi"
    headless = not kind.has_head or kind.is_bi_encoder  # encoder "" on a headless folder, or "cross" on one
    if headless and not (encoder == "cross" and allow_new_head):
        raise ConfigError(_no_head_message(name, kind))
    return "cross"


def load_scorer(name: str, *, encoder: str = "", allow_new_head: bool = False, max_length: int | None = None,
                dtype: torch.dtype | None = None) -> CrossEncoder | BiEncoder | Seq2SeqReranker:
    """The PyTorch scorer of ``name``: its own kind (``encoder=""``), or as a bi- / cross-encoder.

    ``encoder="bi"`` scores any encoder by the cosine of its pooled embeddings (the folder's pooling if it
    saved one, else mean). ``encoder="cross"`` on a folder without a classifier needs ``allow_new_head``.
    """
    kind = detect_model_kind(name, onnx=False)
    how = scorer_kind(name, kind, encoder, allow_new_head)
    if how == "causal":
        from distilrank.models.causal import CausalReranker

        return CausalReranker.from_pretrained(name, max_length=max_length, dtype=dtype)
    if how == "seq2seq":
        from distilrank.models.seq2seq import Seq2SeqReranker

        return Seq2SeqReranker.from_pretrained(name, max_length=max_length, dtype=dtype)
    if how == "bi":
        from distilrank.models.bi_encoder import BiEncoder

        return BiEncoder.from_pretrained(name, max_length=max_length, dtype=dtype)
    from distilrank.models.cross_encoder import CrossEncoder

    return CrossEncoder.from_pretrained(name, max_length=max_length, dtype=dtype, allow_new_head=allow_new_head)
