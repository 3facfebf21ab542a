"""What a model folder is (models/kind.py), and that every loader honours it instead of guessing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, BertForMaskedLM

from distilrank.cli import main
from distilrank.config import EvalConfig, LabelConfig, TrainConfig
from distilrank.errors import ConfigError
from distilrank.inference.reranker import Reranker
from distilrank.models.bi_encoder import BiEncoder
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.models.kind import ModelKind, detect_model_kind, load_scorer
from distilrank.models.seq2seq import Seq2SeqReranker

PACKAGED = "packaged:all-MiniLM-L6-v2"
PAIRS = [("sort a list", "sort the list items"), ("sort a list", "open a file"), ("read a file", "open and read")]


def _bare(tiny_model: Path, folder: Path) -> Path:
    """A bare BertModel (no classification head) from the tiny cross-encoder's encoder."""
    AutoModel.from_pretrained(tiny_model).save_pretrained(folder)
    for f in tiny_model.glob("*"):
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, folder / f.name)
    return folder


def _st_folder(tiny_model: Path, folder: Path, pooling: str = "cls", normalize: bool = False) -> Path:
    """A sentence-transformers embedding folder as sentence-transformers itself writes it."""
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(_bare(tiny_model, folder.with_name(folder.name + "-bare"))), max_seq_length=64)
    modules = [word, models.Pooling(word.get_word_embedding_dimension(), pooling_mode=pooling)]
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def test_detect_model_kind_of_every_folder(tiny_model, tmp_path):
    from tiny import make_tiny_t5

    assert detect_model_kind(tiny_model) == ModelKind.CROSS_ENCODER
    bi = tmp_path / "bi"
    BiEncoder.from_pretrained(str(tiny_model)).save_pretrained(bi)
    assert detect_model_kind(bi) == ModelKind.BI_ENCODER
    assert detect_model_kind(_st_folder(tiny_model, tmp_path / "st")) == ModelKind.ST_BI_ENCODER
    assert detect_model_kind(_bare(tiny_model, tmp_path / "bare")) == ModelKind.ENCODER
    mlm = tmp_path / "mlm"
    BertForMaskedLM(AutoModel.from_pretrained(tiny_model).config).save_pretrained(mlm)
    assert detect_model_kind(mlm) == ModelKind.ENCODER
    assert detect_model_kind(make_tiny_t5(tmp_path / "t5")) == ModelKind.SEQ2SEQ
    st_cross = tmp_path / "st-cross"
    shutil.copytree(tiny_model, st_cross)
    config = json.loads((st_cross / "config.json").read_text())
    (st_cross / "config.json").write_text(json.dumps({**config, "sentence_transformers": {"version": "5"}}))
    assert detect_model_kind(st_cross) == ModelKind.ST_CROSS_ENCODER
    (st_cross / "model.onnx").write_bytes(b"")
    assert detect_model_kind(st_cross) == ModelKind.ONNX
    assert detect_model_kind(st_cross, onnx=False) == ModelKind.ST_CROSS_ENCODER
    assert detect_model_kind(PACKAGED) == ModelKind.ST_BI_ENCODER
    with pytest.raises(ConfigError, match=f"{tmp_path}.*no config.json"):
        detect_model_kind(tmp_path)


@pytest.mark.parametrize("pooling,normalize", [("cls", False), ("mean", True), ("max", False)])
def test_sentence_transformers_folder_scores_as_sentence_transformers_does(tiny_model, tmp_path, pooling, normalize):
    from sentence_transformers import SentenceTransformer

    folder = _st_folder(tiny_model, tmp_path / "st", pooling, normalize)
    rr = Reranker.load(folder, device="cpu")
    assert isinstance(rr.model, BiEncoder)
    assert (rr.model.pooling, rr.model.normalize, rr.model.max_length) == (pooling, normalize, 64)
    st = SentenceTransformer(str(folder), device="cpu")
    q = st.encode([q for q, _ in PAIRS], convert_to_tensor=True)
    d = st.encode([d for _, d in PAIRS], convert_to_tensor=True)
    expected = torch.nn.functional.cosine_similarity(q, d).numpy()
    np.testing.assert_allclose(rr.score(PAIRS), expected, atol=1e-5)


def test_unsupported_sentence_transformers_modules_are_refused(tiny_model, tmp_path):
    folder = _st_folder(tiny_model, tmp_path / "st")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConfigError, match="modules.json lists Dense"):
        Reranker.load(folder)


def test_packaged_model_is_scored_as_its_bi_encoder():
    rr = Reranker.load(PACKAGED, device="cpu")
    assert isinstance(rr.model, BiEncoder) and rr.model.normalize and rr.model.pooling == "mean"
    expected = BiEncoder.from_pretrained(PACKAGED).score(PAIRS)
    np.testing.assert_allclose(rr.score(PAIRS), expected, atol=1e-6)
    assert rr.score(PAIRS)[0] > rr.score(PAIRS)[1]  # a trained embedding model, not a random head


def test_a_folder_without_a_head_is_refused_unless_asked(tiny_model, tmp_path):
    bare = _bare(tiny_model, tmp_path / "bare")
    for load in (lambda: Reranker.load(bare), lambda: load_scorer(str(bare)),
                 lambda: CrossEncoder.from_pretrained(str(bare)), lambda: Reranker.load(bare, encoder="cross")):
        with pytest.raises(ConfigError, match="encoder=bi") as exc:
            load()
        assert str(bare) in str(exc.value) and "allow_new_head" in str(exc.value)
    assert isinstance(Reranker.load(bare, encoder="bi").model, BiEncoder)
    assert isinstance(Reranker.load(bare, encoder="cross", allow_new_head=True).model, CrossEncoder)
    assert isinstance(Reranker.load(tiny_model, encoder="bi").model, BiEncoder)  # any encoder, pooled
    with pytest.raises(ConfigError, match="encoder must be"):
        Reranker.load(tiny_model, encoder="dual")


def test_seq2seq_and_encoder_settings(tmp_path):
    from tiny import make_tiny_t5

    t5 = make_tiny_t5(tmp_path / "t5")
    assert isinstance(load_scorer(str(t5), max_length=64), Seq2SeqReranker)
    assert isinstance(load_scorer(str(t5), encoder="cross", max_length=64), Seq2SeqReranker)
    with pytest.raises(ConfigError, match="seq2seq.*encoder=bi"):
        load_scorer(str(t5), encoder="bi")


def test_allow_new_head_needs_encoder_cross():
    with pytest.raises(ConfigError, match="allow_new_head=true applies to encoder=cross"):
        EvalConfig(model="m", allow_new_head=True)
    with pytest.raises(ConfigError, match="encoder must be"):
        LabelConfig(teacher="t", data="d", encoder="dual")


def test_eval_and_label_refuse_a_headless_folder_in_one_line(tiny_model, tmp_path, demo_beir, groups_file, capsys):
    bare = _bare(tiny_model, tmp_path / "bare")
    capsys.readouterr()
    assert main(["eval", f"data={demo_beir}", f"model={bare}", "top_k=3", "max_queries=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bare) in err and "encoder=bi" in err and "Traceback" not in err
    out = tmp_path / "labels.jsonl"
    assert main(["label", f"teacher={bare}", f"data={groups_file}", f"output={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bare) in err
    assert not out.exists() and not list(tmp_path.glob("labels.jsonl*"))
    assert main(["eval", f"data={demo_beir}", f"model={bare}", "top_k=3", "max_queries=2", "encoder=bi"]) == 0


def test_train_starts_a_cross_encoder_from_a_bare_encoder_without_a_flag(tiny_model, tmp_path, groups_file):
    from distilrank.training.run import run_training

    bare = _bare(tiny_model, tmp_path / "bare")
    cfg = TrainConfig(train_file=str(groups_file), model=str(bare), output_dir=str(tmp_path / "run"), max_steps=1,
                      batch_size=2, group_size=3, max_length=32)
    run_training(cfg)
    assert detect_model_kind(tmp_path / "run" / "model") == ModelKind.CROSS_ENCODER
    assert isinstance(Reranker.load(tmp_path / "run" / "model").model, CrossEncoder)


@pytest.mark.slow
@pytest.mark.shared_data
def test_eval_of_the_packaged_model_equals_its_bi_encoder_on_trec_dl_2019(shared_data, capsys):
    from distilrank.evaluation.ranking import evaluate_reranking
    from distilrank.evaluation.run import first_stage_run, resolve_dataset

    data = str(shared_data / "trec-dl-2019")
    assert main(["eval", f"data={data}", f"model={PACKAGED}", "relevance_level=2"]) == 0
    printed = capsys.readouterr().out
    dataset, given = resolve_dataset(data, "test")
    run = first_stage_run(dataset, given, 100)
    encoder = BiEncoder.from_pretrained(PACKAGED)
    report = evaluate_reranking(dataset, run, lambda pairs: encoder.score(pairs), 100, relevance_level=2)
    ndcg = report.reranked["nDCG@10"]
    assert ndcg > report.first_stage["nDCG@10"] + 0.1  # the trained bi-encoder, well above the first stage
    assert f"{ndcg:.4f}" in printed
