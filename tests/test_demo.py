import json

import yaml

from distilrank.config import DemoConfig
from distilrank.demo import run_demo


def test_demo_pipeline_writes_everything(tmp_path, tiny_model, capsys):
    out = tmp_path / "demo"
    cfg = DemoConfig(output_dir=str(out), model=str(tiny_model), loss="listwise", max_steps=2, batch_size=2,
                     group_size=3, max_length=48, top_k=5, test_queries=8, fusion_weight=0.3, distill_steps=2,
                     distill_batch_size=4, alpha_ce=5.0, alpha_mlm=2.0, head_fit_steps=2)
    metrics = run_demo(cfg)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["bm25"]["nDCG@10"] == metrics["bm25"]["nDCG@10"]
    for system in ("bm25", "untrained", "reranker", "reranker+bm25 (w=0.3)"):
        assert set(saved[system]) == {"nDCG@10", "MRR@10", "MAP", "R@5"}
    assert saved["test_queries"] == 8 and saved["corpus_size"] >= 2000
    assert "listwise" in saved["recipe"] and "KL x5, MLM x2, cosine loss x1" in saved["recipe"]
    for name in ("config.yaml", "metrics.png", "train_groups.jsonl", "data/corpus.jsonl",
                 "train/model/model.safetensors", "train/loss.png", "train/metrics.jsonl",
                 "distill/model/model.safetensors", "distill/teacher_head/model/config.json", "distill/loss.png"):
        assert (out / name).exists(), name
    # the reranker is fine-tuned from the distilled 1-layer student of the 2-layer teacher
    assert saved["distillation"]["student"]["layers"] == 1 and saved["distillation"]["teacher"]["layers"] == 2
    assert yaml.safe_load((out / "train" / "config.yaml").read_text())["model"] == str(out / "distill" / "model")
    table = capsys.readouterr().out
    assert "bm25" in table and "untrained" in table and "reranker" in table


def test_demo_by_default_distils_then_trains_and_scores_a_bi_encoder(tmp_path, tiny_model):
    """The default demo distils a student (cosine term only: no MLM head is fitted), fine-tunes it as a bi-encoder
    (loss=mnrl), and its 'reranker' row is the trained bi-encoder's cosine (what `distilrank eval` gives)."""
    from distilrank.data.readers import read_beir
    from distilrank.evaluation.ranking import evaluate_reranking
    from distilrank.evaluation.run import first_stage_run
    from distilrank.inference.reranker import Reranker
    from distilrank.models.bi_encoder import BiEncoder

    out = tmp_path / "demo"
    cfg = DemoConfig(output_dir=str(out), model=str(tiny_model), max_steps=2, batch_size=2, group_size=3,
                     max_length=48, top_k=5, test_queries=8, fusion_weight=0.0, distill_steps=2, distill_batch_size=4)
    metrics = run_demo(cfg)
    model_dir = out / "train" / "model"
    assert (model_dir / "bi_encoder.json").is_file() and "bi-encoder's cosine" in metrics["recipe"]
    assert "mnrl loss" in metrics["recipe"] and "(2 steps, cosine loss x1)" in metrics["recipe"]
    assert metrics["distillation"]["student"]["layers"] == 1 and not (out / "distill" / "teacher_head").exists()
    assert isinstance(Reranker.load(model_dir).model, BiEncoder)
    test = read_beir(out / "data", "test")
    bi = BiEncoder.from_pretrained(str(model_dir), max_length=48)
    again = evaluate_reranking(test, first_stage_run(test, None, 5), lambda p: bi.score(p), 5)
    assert again.reranked["nDCG@10"] == metrics["reranker"]["nDCG@10"]
    untrained = BiEncoder.from_pretrained(str(out / "distill" / "model"), max_length=48)
    before = evaluate_reranking(test, first_stage_run(test, None, 5), lambda p: untrained.score(p), 5)
    assert before.reranked["nDCG@10"] == metrics["untrained"]["nDCG@10"]


def test_demo_config_refuses_soft_losses_and_zero_alphas():
    import pytest

    from distilrank.errors import ConfigError

    with pytest.raises(ConfigError, match="loss=kl learns a teacher's soft labels"):
        DemoConfig(loss="kl")
    with pytest.raises(ConfigError, match="all 0"):
        DemoConfig(alpha_cos=0.0)
    DemoConfig(alpha_cos=0.0, distill_steps=0)  # no distillation: the alphas are unused
