"""ONNX export (fp32 / int8), the onnxruntime scoring backend and Reranker backend selection."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from distilrank import ConfigError, Reranker
from distilrank.errors import MissingExtraError
from distilrank.inference.export import export_onnx, spearman
from distilrank.inference.onnx_backend import OnnxCrossEncoder
from distilrank.models.cross_encoder import CrossEncoder

pytest.importorskip("onnxruntime")

WORDS = ["sort", "a", "list", "python", "file", "open", "read", "write", "data", "key", "value", "string", "number", "function", "class", "method"]


def varied_pairs(n: int = 40, seed: int = 0) -> list[tuple[str, str]]:
    """Pairs from 1 to ~300 tokens: some are truncated at max_length, most batches are padded."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 6))))
        doc_len = int(rng.integers(1, 300 if i % 7 == 0 else 40))
        pairs.append((q, " ".join(rng.choice(WORDS, size=doc_len))))
    return pairs


@pytest.fixture(scope="module")
def spread_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with weights drawn 15x wider, so scores spread widely and ranks are meaningful.

    (At the usual 0.02 init every pair scores the same to 4 decimals: parity would prove nothing.)
    """
    import torch
    from transformers import BertForSequenceClassification

    folder = tmp_path_factory.mktemp("spread") / "model"
    shutil.copytree(tiny_model, folder)
    model = BertForSequenceClassification.from_pretrained(folder)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fp32_dir(spread_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(spread_model, tmp_path_factory.mktemp("fp32") / "onnx")


def test_fp32_scores_match_pytorch(spread_model, fp32_dir):
    pairs = varied_pairs()
    reference = np.asarray(CrossEncoder.from_pretrained(str(spread_model)).score(pairs, batch_size=8))
    onnx = OnnxCrossEncoder.from_pretrained(fp32_dir)
    scores = np.asarray(onnx.score(pairs, batch_size=8))
    assert reference.std() > 0.1  # a real spread: the comparison below can fail
    np.testing.assert_allclose(scores, reference, atol=1e-4, rtol=0)
    # batch size and input order change nothing
    np.testing.assert_allclose(onnx.score(pairs, batch_size=1), scores, atol=1e-5, rtol=0)
    np.testing.assert_allclose(onnx.score(pairs[::-1], batch_size=64)[::-1], scores, atol=1e-5, rtol=0)
    assert onnx.score([]) == []


def test_export_folder_contents(spread_model, fp32_dir):
    assert {"model.onnx", "config.json", "onnx.json", "tokenizer_config.json"} <= {p.name for p in fp32_dir.iterdir()}
    meta = json.loads((fp32_dir / "onnx.json").read_text())
    fused = meta.pop("fused")
    assert meta == {"format": "onnx", "kind": "cross_encoder", "quantize": "none", "opset": 17, "max_length": 128,
                    "source": str(spread_model)}
    # every layer's attention runs in onnxruntime's fused kernel, and the SDPA NaN guard is gone
    import onnx

    ops = [node.op_type for node in onnx.load(str(fp32_dir / "model.onnx")).graph.node]
    layers = json.loads((spread_model / "config.json").read_text())["num_hidden_layers"]
    assert fused["Attention"] == ops.count("Attention") == layers
    assert "IsNaN" not in ops
    assert not list(fp32_dir.parent.glob(".onnx.*"))  # no temp folder left behind


def test_max_length_is_saved_and_used(spread_model, tmp_path):
    out = export_onnx(spread_model, tmp_path / "onnx32", max_length=32)
    onnx = OnnxCrossEncoder.from_pretrained(out)
    assert onnx.max_length == 32 and json.loads((out / "onnx.json").read_text())["max_length"] == 32
    pairs = [p for p in varied_pairs(60) if len(p[1].split()) > 40]  # all truncated at 32 tokens
    reference = CrossEncoder.from_pretrained(str(spread_model), max_length=32).score(pairs)
    np.testing.assert_allclose(onnx.score(pairs), reference, atol=1e-4, rtol=0)


def test_int8_is_smaller_and_ranks_like_fp32(spread_model, fp32_dir, tmp_path):
    out = export_onnx(spread_model, tmp_path / "int8", quantize="int8")
    import onnx

    # the MatMul weights become int8 (per output channel); the embeddings stay fp32
    graph = onnx.load(str(out / "model.onnx")).graph
    assert sum(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer) >= 12  # 2 layers x 6 MatMuls
    weights = {t.name for t in graph.initializer}
    # every MatMul with a weight is quantised (the attention-score MatMuls of two activations stay)
    assert not [n for n in graph.node if n.op_type == "MatMul" and weights & set(n.input)]
    # the weights take less room (file sizes of this tiny model are dominated by the graph itself)
    def weight_bytes(folder: Path) -> int:
        return sum(len(t.raw_data) for t in onnx.load(str(folder / "model.onnx")).graph.initializer)

    assert weight_bytes(out) < weight_bytes(fp32_dir)
    assert not (out / "model.fp32.onnx").exists()
    assert json.loads((out / "onnx.json").read_text())["quantize"] == "int8"
    pairs = varied_pairs(60, seed=1)
    fp32 = OnnxCrossEncoder.from_pretrained(fp32_dir).score(pairs)
    int8 = OnnxCrossEncoder.from_pretrained(out).score(pairs)
    assert spearman(fp32, int8) > 0.9
    assert fp32 != int8  # really quantised


def test_spearman_reference():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks [1, 2, 3] vs [1, 3, 2]: 1 - 6 * 2 / (3 * 8) = 0.5
    assert spearman([1, 2, 3], [5, 9, 7]) == pytest.approx(0.5)


def test_reranker_picks_the_backend(spread_model, fp32_dir):
    pairs = varied_pairs(10)
    rr = Reranker.load(fp32_dir)
    assert isinstance(rr.model, OnnxCrossEncoder)
    torch_rr = Reranker.load(spread_model)
    assert isinstance(torch_rr.model, CrossEncoder)
    np.testing.assert_allclose(rr.score(pairs), torch_rr.score(pairs), atol=1e-4, rtol=0)
    docs = [d for _, d in pairs]
    assert [r.index for r in rr.rank("sort a list", docs)] == [r.index for r in torch_rr.rank("sort a list", docs)]
    assert isinstance(Reranker.load(spread_model, backend="torch").model, CrossEncoder)
    with pytest.raises(ConfigError, match="only an ONNX export"):
        Reranker.load(fp32_dir, backend="torch")
    with pytest.raises(ConfigError, match="backend='onnx' needs .*model.onnx"):
        Reranker.load(spread_model, backend="onnx")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        Reranker.load(fp32_dir, device="cuda")
    with pytest.raises(ConfigError, match="backend must be one of"):
        Reranker.load(fp32_dir, backend="tensorrt")


def test_cli_export_prints_and_records_parity(spread_model, demo_beir, tmp_path, capsys):
    from distilrank.cli import main

    out = tmp_path / "cli-onnx"
    argv = ["export", f"model={spread_model}", f"output_dir={out}", f"parity_data={demo_beir}", "parity_pairs=20"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "parity on 20 pairs" in printed and "max |torch - onnx|" in printed and "Spearman" in printed
    parity = json.loads((out / "onnx.json").read_text())["parity"]
    assert parity["pairs"] == 20 and parity["max_abs_diff"] < 1e-4 and parity["spearman"] > 0.999
    # a second export to the same folder is refused: nothing is overwritten
    with pytest.raises(ConfigError, match="already exists; choose another"):
        export_onnx(spread_model, out)
    assert main(argv) != 0


def test_seq2seq_checkpoint_is_refused(tmp_path):
    from tiny import make_tiny_t5

    t5 = make_tiny_t5(tmp_path / "t5")
    with pytest.raises(ConfigError, match="seq2seq .* export supports cross-encoders"):
        export_onnx(t5, tmp_path / "t5-onnx")
    assert not (tmp_path / "t5-onnx").exists()


@pytest.fixture(scope="module")
def spread_bi_encoder(spread_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wide-weight tiny BERT saved as a mean-pooling bi-encoder (its cosines spread too)."""
    from distilrank.models.bi_encoder import BiEncoder

    folder = tmp_path_factory.mktemp("spread-bi") / "bi"
    BiEncoder.from_pretrained(str(spread_model), max_length=64).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_bi_encoder_exports_and_scores_by_cosine_as_pytorch(quantize, spread_bi_encoder, tmp_path, capsys):
    """A bi-encoder's graph gives each text's embedding; Reranker.load scores the export by cosine like PyTorch."""
    from distilrank.cli import main
    from distilrank.inference.onnx_backend import OnnxBiEncoder
    from distilrank.models.bi_encoder import BiEncoder

    out = tmp_path / "onnx"
    assert main(["export", f"model={spread_bi_encoder}", f"output_dir={out}", f"quantize={quantize}",
                 "parity_data=demo", "parity_pairs=20"]) == 0
    meta = json.loads((out / "onnx.json").read_text())
    assert (meta["kind"], meta["pooling"], meta["normalize"], meta["max_length"]) == ("bi_encoder", "mean", True, 64)
    assert meta["parity"]["pairs"] == 20 and "parity on 20 pairs" in capsys.readouterr().out
    rr = Reranker.load(out)
    assert isinstance(rr.model, OnnxBiEncoder)
    torch_bi = BiEncoder.from_pretrained(str(spread_bi_encoder))
    pairs = varied_pairs(30)
    got, ref = np.asarray(rr.score(pairs)), np.asarray(torch_bi.score(pairs))
    assert ref.std() > 0.05  # the cosines spread: agreement below is not agreement on a constant
    if quantize == "none":
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
        texts = [p[1] for p in pairs[:8]]
        np.testing.assert_allclose(rr.model.encode(texts, batch_size=3), torch_bi.encode(texts), atol=1e-5, rtol=0)
    else:
        assert spearman(got, ref) > 0.95 and np.abs(got - ref).max() < 0.1
    with pytest.raises(ConfigError, match="apply to cross-encoders"):
        Reranker.load(out, long_documents="maxp")


def test_missing_onnxruntime_names_the_extra(fp32_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(MissingExtraError, match=r"distilrank\[onnx\]"):
        OnnxCrossEncoder.from_pretrained(fp32_dir)


def test_onnx_folder_without_model_file(tiny_model):
    with pytest.raises(ConfigError, match="no model.onnx in"):
        OnnxCrossEncoder.from_pretrained(tiny_model)


def test_unfusable_or_mismatching_fusion_keeps_the_traced_graph(spread_model, tmp_path, monkeypatch, caplog):
    """An unknown model type, or a fused graph whose logits differ, leaves a correct unfused export."""
    import onnx

    import distilrank.inference.export as export

    pairs = varied_pairs(20, seed=3)
    reference = np.asarray(CrossEncoder.from_pretrained(str(spread_model)).score(pairs))

    def check(folder: Path) -> None:
        assert json.loads((folder / "onnx.json").read_text())["fused"] == {}
        ops = {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}
        assert "Attention" not in ops and "IsNaN" not in ops  # eager attention, not fused
        assert not list(folder.glob("*.fused.onnx"))
        np.testing.assert_allclose(OnnxCrossEncoder.from_pretrained(folder).score(pairs), reference, atol=1e-4, rtol=0)

    with monkeypatch.context() as m:
        m.setattr(export, "FUSABLE_MODEL_TYPES", set())
        check(export_onnx(spread_model, tmp_path / "unknown-type"))
    with monkeypatch.context() as m:
        m.setattr(export.np, "allclose", lambda *a, **k: False)  # as if the fused logits had moved
        check(export_onnx(spread_model, tmp_path / "mismatch"))
    assert "fused attention changed the logits" in caplog.text
