"""``distilrank export``: a saved cross-encoder or bi-encoder to ONNX (fp32, or int8 by dynamic quantisation)."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distilrank.config import ExportConfig
from distilrank.errors import ConfigError
from distilrank.inference.onnx_backend import (
    ONNX_FILE,
    ONNX_META,
    import_onnxruntime,
    load_export,
    make_session,
)
from distilrank.io import atomic_dir, atomic_write_json, check_output_path, output_lock
from distilrank.models.bi_encoder import BiEncoder
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.models.kind import ModelKind, detect_model_kind, scorer_kind

logger = logging.getLogger(__name__)

# Pairs of different lengths: the traced batch must carry padding, so the attention mask stays in the graph.
EXAMPLE_PAIRS = [("what is a reranker", "a model that scores query document pairs"), ("sort", "a list")]


class _Logits(nn.Module):
    """The HF classifier as a function of positional tensors (what the ONNX exporter traces)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits  # (B, 1)


class _Embeddings(nn.Module):
    """A bi-encoder's pooled (normalised, as saved) embeddings as a function of positional tensors."""

    def __init__(self, encoder: BiEncoder, names: Sequence[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.names = list(names)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.encoder(**dict(zip(self.names, inputs)))  # (B, D)


def _export_graph(model: nn.Module, wrap: Callable[[list[str]], nn.Module], features: Any, path: Path, opset: int,
                  output: str) -> None:
    """Trace ``wrap(input names)`` (around the HF ``model``) with dynamic batch and sequence axes to ``path``.

    ``output`` names the graph's output: ``logits`` ``(B, 1)`` of a cross-encoder or ``embeddings``
    ``(B, D)`` of a bi-encoder. It uses the TorchScript exporter.

    The TorchScript path (``dynamo=False``) exports BERT-family models of transformers 5 with
    matching outputs and needs no ``onnxscript``. Attention is traced in its eager form: the SDPA
    form exports a NaN guard (``IsNaN`` + ``Where`` over every attention matrix) that took 14% of
    onnxruntime's kernel time on TREC DL pairs, and the eager form is what onnxruntime's
    attention fusion recognises (benchmarks/RESULTS.md, "Fast inference, third run").
    """
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features]
    model.eval()
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    attention = getattr(model.config, "_attn_implementation", None)
    if attention not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except (ValueError, ImportError):
            attention = None  # the architecture has no eager attention: export what it has
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # tracer warnings about Python booleans concern branches that are fixed for encoders
            warnings.simplefilter("ignore")
            torch.onnx.export(wrap(names), tuple(features[n] for n in names), str(path),
                              input_names=names, output_names=[output],
                              dynamic_axes={**axes, output: {0: "batch"}}, opset_version=opset, dynamo=False)
    finally:
        if attention not in (None, "eager"):
            model.set_attn_implementation(attention)


# onnxruntime's transformer optimizer knows these encoders' attention pattern (its "bert" fusions)
FUSABLE_MODEL_TYPES = {"bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra"}


def _fuse_attention(path: Path, config: Any) -> dict[str, int]:
    """Rewrite ``path`` with each layer's attention fused into onnxruntime's ``Attention`` kernel.

    Only the attention fusion (plus the bias-GELU fusion): onnxruntime's ``SkipLayerNormalization``
    kernel was slower on CPU than the separate Add and LayerNormalization it replaces (241 vs
    132 ms of kernel time on the same TREC DL pairs), so those are left to the session's own
    optimiser. The graph is kept unchanged when the model type is not one the optimiser knows,
    when nothing fuses, or when the fused graph's logits differ from the traced ones by more than
    1e-4 on the example pairs. Returns the fused operator counts (empty when unchanged).
    """
    model_type = getattr(config, "model_type", "")
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if model_type not in FUSABLE_MODEL_TYPES or not heads or not hidden:
        return {}
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = False
    options.enable_embed_layer_norm = False
    ort_logger = logging.getLogger("onnxruntime.transformers")  # its INFO/WARNING chatter is not for users
    level = ort_logger.level
    ort_logger.setLevel(logging.ERROR)
    try:
        fused = optimize_model(str(path), model_type="bert", num_heads=int(heads), hidden_size=int(hidden),
                               optimization_options=options)
    except Exception as exc:  # noqa: BLE001 - a failed optimisation leaves a correct, slower graph
        logger.warning("attention fusion skipped (%s: %s); the export is unfused", type(exc).__name__, exc)
        return {}
    finally:
        ort_logger.setLevel(level)
    counts = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    if not counts.get("Attention"):
        return {}
    candidate = path.with_suffix(".fused.onnx")
    fused.save_model_to_file(str(candidate))
    traced = make_session(path)
    feeds = _example_feeds(config, [i.name for i in traced.get_inputs()])
    before = traced.run(None, feeds)[0]
    after = make_session(candidate).run(None, feeds)[0]
    if not np.allclose(before, after, atol=1e-4, rtol=0):
        logger.warning("fused attention changed the logits by %.2e; the export is unfused",
                       float(np.abs(before - after).max()))
        candidate.unlink()
        return {}
    candidate.replace(path)
    return counts


def _example_feeds(config: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Two rows of random token ids (the second one padded) for the graph inputs ``names``."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, max(2, min(getattr(config, "vocab_size", 1000), 30000)), size=(2, 24), dtype=np.int64)
    mask = np.ones((2, 24), dtype=np.int64)
    mask[1, 15:] = 0  # the second row is padded, so the mask path is checked too
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((2, 24), dtype=np.int64)}
    feeds["token_type_ids"][:, 10:] = 1
    return {n: feeds[n] for n in names}


def _quantize_int8(src: Path, dst: Path) -> None:
    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime logs a generic "consider pre-processing" advice on the root logger: not for our users
    def advice(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        # Per-channel weight scales on the MatMuls only (embeddings stay fp32): on the demo set and
        # TREC DL 2019 this kept nDCG@10 within 0.003 of fp32, where onnxruntime's defaults
        # (per-tensor, every op incl. the embedding Gather) moved it by 0.010 and 0.016, at the
        # same speed (benchmarks/RESULTS.md, "int8 recipes").
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    finally:
        root.removeFilter(advice)


def export_onnx(
    model_dir: str | Path,
    output_dir: str | Path,
    *,
    quantize: str = "none",
    opset: int = 17,
    max_length: int | None = None,
) -> Path:
    """Write ``output_dir`` with ``model.onnx``, the HF config, the tokenizer and ``onnx.json``.

    A cross-encoder's graph gives each pair's logit; a bi-encoder's (a folder saved by
    :class:`~distilrank.models.bi_encoder.BiEncoder`) gives each text's pooled embedding, and
    ``onnx.json`` records ``kind``, pooling and normalisation so that the ONNX backend scores pairs
    by cosine as the checkpoint does.

    ``quantize="int8"`` stores dynamically quantised weights (QInt8; activations quantised at run
    time). ``max_length`` None: the length the model was saved with; it is stored as the
    tokenizer's ``model_max_length``. The folder appears only when complete.
    """
    if quantize not in ("none", "int8"):
        raise ConfigError(f"quantize must be 'none' or 'int8', got {quantize!r}")
    out = check_output_path(output_dir, folder=True, setting="output_dir")
    with output_lock(out, "output_dir"):  # a second export to this folder stops here
        if out.exists():
            raise ConfigError(f"output_dir {out} already exists; choose another folder (the export never overwrites)")
        return _export(model_dir, out, quantize, opset, max_length)


def _export(model_dir: str | Path, out: Path, quantize: str, opset: int, max_length: int | None) -> Path:
    import_onnxruntime()  # fail before the slow part when the [onnx] extra is missing
    how = _export_kind(model_dir)
    model: CrossEncoder | BiEncoder
    if how == "bi":  # the graph gives each text's embedding; scores are their cosines
        model = BiEncoder.from_pretrained(str(model_dir), max_length=max_length)
        features = model.tokenize([t for pair in EXAMPLE_PAIRS for t in pair])
        wrap, output, kind = (lambda names: _Embeddings(model, names)), "embeddings", "bi_encoder"
    else:
        model = CrossEncoder.from_pretrained(str(model_dir), max_length=max_length)
        features = model.tokenize([q for q, _ in EXAMPLE_PAIRS], [d for _, d in EXAMPLE_PAIRS])
        wrap, output, kind = (lambda names: _Logits(model.model, names)), "logits", "cross_encoder"
    config = model.model.config
    with atomic_dir(out) as tmp:
        fp32 = tmp / ("model.fp32.onnx" if quantize == "int8" else ONNX_FILE)
        _export_graph(model.model, wrap, features, fp32, opset, output)
        fused: dict[str, int] = {}
        if quantize == "int8":
            # the int8 recipe quantises the MatMuls of the unfused graph (a fused Attention node's
            # projections would stay fp32)
            _quantize_int8(fp32, tmp / ONNX_FILE)
            fp32.unlink()
        else:
            fused = _fuse_attention(fp32, config)
        if isinstance(model, CrossEncoder):
            model.passages.record(config)  # the ONNX backend scores long documents as the checkpoint did
        config.save_pretrained(tmp)
        model.tokenizer.model_max_length = model.max_length
        model.tokenizer.save_pretrained(tmp)
        meta = {"format": "onnx", "kind": kind, "quantize": quantize, "opset": opset, "max_length": model.max_length,
                "source": str(model_dir), "fused": fused}
        if isinstance(model, BiEncoder):
            meta.update(pooling=model.pooling, normalize=model.normalize)
        (tmp / ONNX_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def _export_kind(model_dir: str | Path) -> str:
    """"bi" or "cross": how the checkpoint at ``model_dir`` scores (anything else is refused, before any work)."""
    kind = detect_model_kind(model_dir)
    if kind == ModelKind.SEQ2SEQ:
        raise ConfigError(f"'{model_dir}' is a seq2seq (T5-family) checkpoint; export supports cross-encoders "
                          "and bi-encoders for now (serve seq2seq rerankers with the PyTorch backend)")
    if kind == ModelKind.ONNX:
        raise ConfigError(f"'{model_dir}' is already an ONNX export; pass the checkpoint folder it was exported from")
    return scorer_kind(str(model_dir), kind)


def parity_pairs(spec: str, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` (query, document) pairs: the top-10 first-stage candidates of ``spec``'s test queries."""
    from distilrank.evaluation.run import first_stage_run, resolve_dataset

    dataset, given = resolve_dataset(spec, "test")
    run = first_stage_run(dataset, given, top_k=10)
    pairs = [(dataset.queries[q].text, dataset.corpus[d].text) for q, docs in run.items() for d, _ in docs]
    if not pairs:
        raise ConfigError(f"parity_data '{spec}' gives no (query, document) pairs; use a dataset with test queries")
    return pairs[:limit]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Export, then score parity pairs with PyTorch and with the ONNX model; print and record the gap."""
    max_length = cfg.max_length or None
    out = export_onnx(cfg.model, cfg.output_dir, quantize=cfg.quantize, opset=cfg.opset, max_length=max_length)
    pairs = parity_pairs(cfg.parity_data, cfg.parity_pairs)
    source = BiEncoder if _export_kind(cfg.model) == "bi" else CrossEncoder
    reference = np.asarray(source.from_pretrained(cfg.model, max_length=max_length).score(pairs))
    exported = np.asarray(load_export(out).score(pairs))
    rho = spearman(reference, exported)
    parity = {"pairs": len(pairs), "data": cfg.parity_data,
              "max_abs_diff": float(np.abs(reference - exported).max()),
              "spearman": None if math.isnan(rho) else rho}
    meta_path = out / ONNX_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    atomic_write_json(meta_path, {**meta, "parity": parity})
    rho_text = "n/a (constant scores)" if parity["spearman"] is None else f"{rho:.4f}"
    print(f"exported {cfg.quantize if cfg.quantize != 'none' else 'fp32'} ONNX to {out}; parity on {len(pairs)} "
          f"pairs of {cfg.parity_data}: max |torch - onnx| = {parity['max_abs_diff']:.2e}, Spearman = {rho_text}")
    if cfg.quantize == "none" and parity["max_abs_diff"] > 1e-3:
        logger.warning("fp32 ONNX scores differ from PyTorch by up to %.2e; check the export", parity["max_abs_diff"])
    return {"output_dir": str(out), "quantize": cfg.quantize, **parity}
