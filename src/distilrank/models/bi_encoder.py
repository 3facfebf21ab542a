"""Bi-encoder: any Hugging Face encoder + mean/CLS pooling (+ L2 normalisation) -> one vector per text.

Queries and documents are encoded separately, so documents can be indexed once (FAISS) and a
query is scored against millions of them. As a reranker the score of a (query, document) pair is
the cosine similarity of their vectors. Saved checkpoints are plain Hugging Face folders plus
``bi_encoder.json`` (pooling, normalisation, length) and the sentence-transformers module files
(``modules.json``, ``1_Pooling/config.json``), so ``sentence_transformers.SentenceTransformer``
loads them too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, BatchEncoding

from distilrank.errors import ConfigError
from distilrank.models.cross_encoder import max_positions, resolve_model_path

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "max")
MARKER = "bi_encoder.json"  # written by save_pretrained: what makes a folder a distilrank bi-encoder


def is_bi_encoder_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a folder saved by :meth:`BiEncoder.save_pretrained`."""
    return (Path(path) / MARKER).is_file()


ST_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
              "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
              "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
# sentence-transformers modules a bi-encoder may list; any other (Dense, LayerNorm, ...) changes the vectors
ST_MODULES = ("Transformer", "Pooling", "Normalize")


def _st_pooling(config: dict, where: Path) -> str:
    """The pooling a sentence-transformers ``Pooling`` config names (old bool keys or new ``pooling_mode``)."""
    modes = config.get("pooling_mode") or [mode for key, mode in ST_POOLING.items() if config.get(key)]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) != 1 or modes[0] not in POOLINGS:
        raise ConfigError(f"{where}: pooling {modes} is not supported (distilrank pools by {', '.join(POOLINGS)}); "
                          "use a model with one of those poolings")
    return modes[0]


def _saved_settings(path: Path) -> dict:
    """Pooling/normalisation saved by us (``bi_encoder.json``) or by sentence-transformers (module files)."""
    from distilrank.models.kind import st_modules

    if (path / MARKER).is_file():
        return json.loads((path / MARKER).read_text(encoding="utf-8"))
    out: dict = {}
    modules = st_modules(str(path))
    types = {str(m.get("type", "")).rsplit(".", 1)[-1]: str(m.get("path", "")) for m in modules}
    extra = [t for t in types if t not in ST_MODULES]
    if extra:
        raise ConfigError(f"{path / 'modules.json'} lists {', '.join(extra)} after pooling, which distilrank does "
                          "not apply (its scores would differ from sentence-transformers'); use a model made of "
                          "Transformer + Pooling (+ Normalize) modules")
    pooling = path / types.get("Pooling", "1_Pooling") / "config.json"
    if pooling.is_file():
        out["pooling"] = _st_pooling(json.loads(pooling.read_text(encoding="utf-8")), pooling)
    if modules:
        out["normalize"] = "Normalize" in types
    st = path / types.get("Transformer", "") / "sentence_bert_config.json"
    if st.is_file():
        out["max_length"] = json.loads(st.read_text(encoding="utf-8")).get("max_seq_length")
    return out


def encode_by_length(texts: Sequence[str], run: Callable[[Sequence[str]], np.ndarray], dim: int, batch_size: int,
                     show_progress: bool = False) -> np.ndarray:
    """``(N, dim)`` float32 rows in input order from ``run`` on batches of texts of similar length (little padding)."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch_size), desc="encoding", unit="batch", disable=not show_progress):
        idx = order[start : start + batch_size]
        out[idx] = run([texts[i] for i in idx])
    return out


def cosine_scores(pairs: Sequence[tuple[str, str]], encode: Callable[[list[str]], np.ndarray]) -> list[float]:
    """Cosine of each (query, document) pair's two vectors; ``encode`` sees each distinct text once."""
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    where = {t: i for i, t in enumerate(texts)}
    vectors = encode(texts)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)  # cosine even if not normalised
    return [float(vectors[where[q]] @ vectors[where[d]]) for q, d in pairs]


def pool(hidden: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """``(B, L, D)`` token states + ``(B, L)`` attention mask -> ``(B, D)`` text vectors."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    if pooling == "max":  # padding never wins the max
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class BiEncoder(nn.Module):
    """``AutoModel`` + pooling; ``forward`` gives ``(B, D)`` vectors (unit length when ``normalize``)."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", normalize: bool = True,
                 max_length: int = 256) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.normalize, self.max_length = pooling, normalize, max_length

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, pooling: str = "", normalize: bool | None = None,
                        max_length: int | None = None, dtype: torch.dtype | None = None) -> BiEncoder:
        """Any HF encoder folder or hub name; pooling and normalisation default to what the folder saved
        (a sentence-transformers folder's ``1_Pooling``), else mean pooling and unit vectors."""
        from distilrank.models.kind import transformer_folder

        path = resolve_model_path(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(transformer_folder(path))
            model = AutoModel.from_pretrained(transformer_folder(path), dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load encoder '{name_or_path}': {exc}. Pass a local model folder, "
                              "or the embedded default 'packaged:all-MiniLM-L6-v2'.") from None
        saved = _saved_settings(Path(path)) if Path(path).is_dir() else {}
        limit = max_positions(model.config) or 512
        max_length = max_length or saved.get("max_length") or min(getattr(tokenizer, "model_max_length", limit), limit)
        if max_length > limit:
            raise ConfigError(f"max_length {max_length} is above what '{name_or_path}' can read ({limit} tokens)")
        return cls(model, tokenizer, pooling or saved.get("pooling", "mean"),
                   saved.get("normalize", True) if normalize is None else normalize, int(max_length))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> BatchEncoding:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length or self.max_length,
                              return_tensors="pt")

    def forward(self, **features: Tensor) -> Tensor:
        out = self.model(**features).last_hidden_state.float()  # (B, L, D): pooled and normalised in fp32
        vectors = pool(out, features["attention_mask"], self.pooling)  # (B, D)
        return nn.functional.normalize(vectors, dim=-1) if self.normalize else vectors

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """``(N, D)`` float32 vectors in input order; batches hold texts of similar length (little padding)."""
        was_training = self.training
        self.eval()

        def run(batch: Sequence[str]) -> np.ndarray:
            return self(**self.tokenize(batch).to(self.device)).float().cpu().numpy()

        out = encode_by_length(texts, run, self.dim, batch_size, show_progress)
        self.train(was_training)
        return out

    def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 64, max_length: int | None = None,
              show_progress: bool = False) -> list[float]:
        """Cosine similarity of each (query, document) pair; each distinct text is encoded once."""
        return cosine_scores(pairs, lambda texts: self.encode(texts, batch_size=batch_size,
                                                              show_progress=show_progress))

    def save_pretrained(self, path: str | Path) -> None:
        """A plain HF folder (``AutoModel`` weights, tokenizer) + ``bi_encoder.json`` + sentence-transformers modules."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(path)
        settings = {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length}
        (path / MARKER).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if self.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (path / "2_Normalize").mkdir(exist_ok=True)
        (path / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
        (path / "1_Pooling").mkdir(exist_ok=True)
        (path / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": self.dim, "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean", "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False}, indent=2), encoding="utf-8")
        (path / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_length, "do_lower_case": False}), encoding="utf-8")
