"""``distilrank distill-mlm``: the task's loss, masking, the run directory, resume and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    BertModel,
)

from distilrank.config import DistillConfig
from distilrank.data.collate import BlockMasker
from distilrank.errors import ConfigError, DataError
from distilrank.losses import hidden_cosine, kd_kl, mlm_ce
from distilrank.models.student import MaskedLM, build_student
from distilrank.training.checkpoint import checkpoints
from distilrank.training.distill import run_distill
from distilrank.training.mlm_task import DistillTask


def _bert_config(vocab: int, layers: int = 4) -> BertConfig:
    return BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="session")
def mlm_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer random BERT with an MLM head, saved with the tiny tokenizer."""
    from tiny import make_tokenizer

    folder = tmp_path_factory.mktemp("mlm-teacher")
    tok = make_tokenizer(folder)
    torch.manual_seed(0)
    BertForMaskedLM(_bert_config(len(tok))).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def headless_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain BertModel (no MLM head), like the packaged all-MiniLM-L6-v2."""
    from tiny import make_tokenizer

    folder = tmp_path_factory.mktemp("headless-teacher")
    tok = make_tokenizer(folder)
    torch.manual_seed(1)
    BertModel(_bert_config(len(tok)), add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Text with structure to learn: each document repeats a short random phrase."""
    import random

    from tiny import WORDS

    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    rows = []
    for _ in range(200):
        phrase = rng.sample(WORDS, 4)
        rows.append(json.dumps({"text": " ".join(phrase * 6)}))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _cfg(teacher: Path, corpus: Path, out: Path, **kw) -> DistillConfig:
    base = dict(data=str(corpus), teacher=str(teacher), output_dir=str(out), block_size=32, batch_size=8,
                max_steps=12, learning_rate=2e-3, eval_blocks=32, log_steps=2, seed=5, head_fit_steps=20,
                head_fit_lr=5e-3)
    base.update(kw)
    return DistillConfig(**base)


def _masked_batch(tokenizer, seed: int = 0) -> dict[str, torch.Tensor]:
    texts = ["the python list sort function returns a new list", "read the file and write the data"]
    blocks = [tokenizer(t)["input_ids"] for t in texts]
    torch.manual_seed(seed)
    return BlockMasker(tokenizer, mlm_probability=0.4)(blocks)


def test_task_loss_is_the_weighted_sum_of_the_three_terms(mlm_teacher):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mlm_teacher)
    teacher = AutoModelForMaskedLM.from_pretrained(mlm_teacher).eval()
    student = build_student(teacher, [0, 3]).eval()
    batch = _masked_batch(tok)
    task = DistillTask(BlockMasker(tok), MaskedLM(teacher), temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0)
    total, terms = task.loss(MaskedLM(student), batch)

    # reference: full forward passes, then pick the masked / real-token positions by hand
    masked, real = batch["labels"] != -100, batch["attention_mask"].bool()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "output_hidden_states": True}
    with torch.no_grad():
        s_out, t_out = student(**inputs), teacher(**inputs)
    expected = {
        "ce": kd_kl(s_out.logits[masked], t_out.logits[masked], 2.0),
        "mlm": mlm_ce(s_out.logits[masked], batch["labels"][masked]),
        "cos": hidden_cosine(s_out.hidden_states[-1][real], t_out.hidden_states[-1][real]),
    }
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), name
    assert total.item() == pytest.approx((5 * expected["ce"] + 2 * expected["mlm"] + expected["cos"]).item(), rel=1e-5)


class _Spy(torch.nn.Module):
    """A MaskedLM stand-in that records how it is called."""

    def __init__(self, inner: MaskedLM) -> None:
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, ids, attention, positions=None):
        self.calls.append(positions is not None)
        return self.inner(ids, attention, positions)


def test_terms_with_alpha_zero_are_not_computed(mlm_teacher):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mlm_teacher)
    teacher = AutoModelForMaskedLM.from_pretrained(mlm_teacher).eval()
    student = MaskedLM(build_student(teacher, [1]))
    batch = _masked_batch(tok)

    spy = _Spy(MaskedLM(teacher))
    _, terms = DistillTask(BlockMasker(tok), spy, alpha_ce=0.0, alpha_mlm=2.0, alpha_cos=1.0).loss(student, batch)
    assert set(terms) == {"mlm", "cos"} and spy.calls == [False]  # teacher run without its MLM head

    spy = _Spy(MaskedLM(teacher))
    _, terms = DistillTask(BlockMasker(tok), spy, alpha_ce=0.0, alpha_mlm=1.0, alpha_cos=0.0).loss(student, batch)
    assert set(terms) == {"mlm"} and spy.calls == []  # no teacher at all

    s_spy = _Spy(student)
    _, terms = DistillTask(BlockMasker(tok), MaskedLM(teacher), alpha_ce=0.0, alpha_mlm=0.0, alpha_cos=1.0).loss(s_spy, batch)
    assert set(terms) == {"cos"} and s_spy.calls == [False]  # student's vocabulary projection skipped


def test_masking_never_touches_special_or_padding_tokens(mlm_teacher):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mlm_teacher)
    masker = BlockMasker(tok, mlm_probability=0.15)
    block = tok("the python list sort function returns a new list " * 3)["input_ids"]
    torch.manual_seed(0)
    chosen = replaced = kept = 0
    for _ in range(300):
        batch = masker([block, block[:7]])
        labels, ids = batch["labels"], batch["input_ids"]
        original = torch.tensor([block, block[:7] + [tok.pad_token_id] * (len(block) - 7)])
        special = torch.isin(original, torch.tensor(tok.all_special_ids)) | (batch["attention_mask"] == 0)
        assert (labels[special] == -100).all()
        assert (ids[special] == original[special]).all()
        sel = labels != -100
        chosen += int(sel.sum())
        replaced += int((ids[sel] == tok.mask_token_id).sum())
        kept += int((ids[sel] == original[sel]).sum())
    candidates = 300 * (len(block) - 2 + 7 - 1)
    assert chosen / candidates == pytest.approx(0.15, abs=0.02)
    assert replaced / chosen == pytest.approx(0.8, abs=0.03)
    assert kept / chosen == pytest.approx(0.1 + 0.1 / len(tok), abs=0.03)


def test_whole_word_masking_masks_all_pieces_of_a_word(mlm_teacher):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mlm_teacher)
    block = tok("sorting reading values sorted items " * 4)["input_ids"]
    pieces = tok.convert_ids_to_tokens(block)
    masker = BlockMasker(tok, mlm_probability=0.3, whole_word=True)
    torch.manual_seed(0)
    for _ in range(50):
        chosen = (masker([block])["labels"][0] != -100).tolist()
        for i, piece in enumerate(pieces):
            if piece.startswith("##"):
                assert chosen[i] == chosen[i - 1], (pieces[i - 1], piece)


def test_distillation_writes_a_student_that_transformers_loads(mlm_teacher, corpus, tmp_path):
    out = tmp_path / "run"
    report = run_distill(_cfg(mlm_teacher, corpus, out, layers=(0, 2), eval_steps=6))
    for name in ("config.yaml", "metrics.json", "metrics.jsonl", "loss.png", "model/config.json"):
        assert (out / name).is_file(), name
    for auto in (AutoModelForMaskedLM, AutoModel):
        assert auto.from_pretrained(out / "model").config.num_hidden_layers == 2
    assert AutoModelForSequenceClassification.from_pretrained(out / "model", num_labels=1).num_labels == 1
    assert report["student"]["parameters"] < report["teacher"]["parameters"]
    assert report["teacher"]["mlm_head"] == "own" and report["terms"]["alpha_ce"] == 5.0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert {"loss_ce", "loss_mlm", "loss_cos"} <= set(losses[0])
    assert losses[-1]["loss"] < losses[0]["loss"]
    assert [r["step"] for r in rows if "eval" in r] == [6, 12]
    assert json.loads((out / "metrics.json").read_text())["student"]["mlm_loss"] == report["student"]["mlm_loss"]


def test_distilbert_architecture_from_a_bert_teacher(mlm_teacher, corpus, tmp_path):
    report = run_distill(_cfg(mlm_teacher, corpus, tmp_path / "run", architecture="distilbert", max_steps=4))
    assert report["student"]["architecture"] == "DistilBertForMaskedLM"
    assert AutoModel.from_pretrained(tmp_path / "run" / "model").config.model_type == "distilbert"


def test_headless_teacher_gets_a_fitted_head(headless_teacher, corpus, tmp_path, capsys):
    out = tmp_path / "run"
    report = run_distill(_cfg(headless_teacher, corpus, out, max_steps=4))
    assert "has no MLM head: fitting one first" in capsys.readouterr().out
    assert report["teacher"]["mlm_head"].startswith("fitted") and report["terms"]["alpha_ce"] == 5.0
    fitted = MaskedLM(AutoModelForMaskedLM.from_pretrained(out / "teacher_head" / "model"))
    # the encoder was frozen: its weights are the teacher's own
    base = BertModel.from_pretrained(headless_teacher, add_pooling_layer=False)
    for name, value in base.state_dict().items():
        assert torch.equal(fitted.model.bert.state_dict()[name], value), name
    log = [json.loads(x) for x in (out / "teacher_head" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]  # the head learned


def test_headless_teacher_can_skip_the_kl_term(headless_teacher, corpus, tmp_path, capsys):
    out = tmp_path / "run"
    report = run_distill(_cfg(headless_teacher, corpus, out, max_steps=4, teacher_head="skip_kl"))
    assert "running without the KL term" in capsys.readouterr().out
    assert report["terms"]["alpha_ce"] == 0.0 and not (out / "teacher_head").exists()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "loss_ce" not in rows[0] and "loss_mlm" in rows[0]


@pytest.mark.parametrize("kw, message", [
    ({"layers": (0, 4)}, "out of range"),
    ({"layers": (2, 1)}, "increasing"),
    ({"block_size": 100}, "above the teacher's maximum input length 64"),
])
def test_bad_settings_fail_before_any_compute(mlm_teacher, corpus, tmp_path, kw, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        run_distill(_cfg(mlm_teacher, corpus, out, **kw))
    assert not (out / "cache").exists() and not (out / "model").exists()


def test_student_with_another_vocabulary_is_refused(mlm_teacher, corpus, tmp_path):
    from transformers import BertTokenizer

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"])}
    other = tmp_path / "other"
    BertForMaskedLM(_bert_config(len(vocab), layers=1)).save_pretrained(other)
    BertTokenizer(vocab=vocab).save_pretrained(other)
    with pytest.raises(ConfigError, match="different vocabulary"):
        run_distill(_cfg(mlm_teacher, corpus, tmp_path / "run", student=str(other)))


@pytest.mark.parametrize("content", [b"", b"  \n\n", b"\x00\x01\x02binary\xff\xfe"])
def test_empty_or_binary_text_is_a_clear_error(mlm_teacher, tmp_path, content):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    with pytest.raises(DataError, match="bad.txt"):
        run_distill(_cfg(mlm_teacher, bad, tmp_path / "run"))
    assert not (tmp_path / "run" / "model").exists()


def test_existing_student_is_distilled_further(mlm_teacher, corpus, tmp_path):
    first = tmp_path / "first"
    run_distill(_cfg(mlm_teacher, corpus, first, layers=(1,), max_steps=2))
    report = run_distill(_cfg(mlm_teacher, corpus, tmp_path / "second", student=str(first / "model"), max_steps=2))
    assert report["student"]["layers"] == 1


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from distilrank.config import DistillConfig
    from distilrank.training.distill import run_distill
    kill_at = int(sys.argv[1])
    def on_step(step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    run_distill(DistillConfig(**{json_cfg}), on_step=on_step)
""")


def test_killed_distillation_resumes_to_the_same_weights(mlm_teacher, corpus, tmp_path):
    import dataclasses

    common = dict(max_steps=12, save_steps=4, gradient_accumulation_steps=2, batch_size=4)
    straight = tmp_path / "straight"
    run_distill(_cfg(mlm_teacher, corpus, straight, **common))

    killed = tmp_path / "killed"
    cfg = _cfg(mlm_teacher, corpus, killed, **common)
    code = KILL_SCRIPT.replace("{json_cfg}", repr(dataclasses.asdict(cfg)))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", code, "10"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [p.name for p in checkpoints(killed)] == ["checkpoint-4", "checkpoint-8"]
    assert not (killed / "model").exists()

    run_distill(_cfg(mlm_teacher, corpus, killed, resume=True, **common))
    a, b = load_file(str(straight / "model" / "model.safetensors")), load_file(str(killed / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


@pytest.mark.parametrize("kw, message", [
    ({"alpha_ce": 0, "alpha_mlm": 0, "alpha_cos": 0}, "all 0"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"mlm_probability": 1.5}, "mlm_probability"),
    ({"block_size": 4}, "block_size"),
    ({"architecture": "gpt"}, "architecture must be one of"),
    ({"teacher_head": "maybe"}, "teacher_head must be one of"),
    ({"student": "some/model", "layers": (0, 1)}, "either student"),
    ({"learning_rate": 3.0}, "absurd"),
    ({"data": ""}, "data is required"),
])
def test_absurd_distill_configs_are_refused(kw, message):
    base = {"data": "corpus.txt", **kw}
    with pytest.raises(ConfigError, match=message):
        DistillConfig(**base)
