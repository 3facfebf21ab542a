from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import make_tokenizer
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    DistilBertForMaskedLM,
)

from distilrank.errors import ConfigError
from distilrank.models.student import (
    build_student,
    check_layers,
    count_parameters,
    default_layers,
    load_teacher,
    mlm_parts,
    save_student,
)

TEXTS = ["the python list sort function", "return the value of a key in this dict"]


def bert_config(vocab_size: int) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def teacher(tokenizer) -> BertForMaskedLM:
    """A random 4-layer BERT MLM whose every weight (LayerNorms, biases, segment embeddings) is
    distinct, so a weight mapped to the wrong place changes the logits."""
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config(len(tokenizer)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def batch(tokenizer) -> dict[str, torch.Tensor]:
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()  # padding is exercised
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def test_default_layers():
    assert default_layers(12) == [0, 2, 4, 7, 9, 11]
    assert default_layers(6) == [0, 3, 5]
    assert default_layers(4) == [0, 3]
    assert default_layers(2) == [0]
    assert default_layers(1) == [0]
    with pytest.raises(ConfigError):
        default_layers(0)


@pytest.mark.parametrize(("layers", "match"), [
    ([0, 2, 12], r"layers \[0, 2, 12\] out of range: this teacher has 12 layers \(0-11\)"),
    ([-1, 3], "out of range"),
    ([0, 2, 2], "strictly increasing"),
    ([4, 2], "strictly increasing"),
    ([], "empty"),
])
def test_check_layers_errors(layers, match):
    with pytest.raises(ConfigError, match=match):
        check_layers(layers, 12)


def test_check_layers_returns_list():
    assert check_layers((0, 5, 11), 12) == [0, 5, 11]


def test_same_with_all_layers_equals_teacher(teacher, batch):
    student = build_student(teacher, range(4)).eval()
    assert type(student) is BertForMaskedLM and student is not teacher
    assert torch.equal(logits(student, batch), logits(teacher, batch))


def test_same_with_two_layers_equals_hand_truncated_teacher(teacher, batch):
    student = build_student(teacher, [0, 2]).eval()
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    assert count_parameters(student) < count_parameters(teacher)
    ids = batch["input_ids"][:1, :6]  # one unpadded row: no mask needed
    with torch.no_grad():
        h = teacher.bert.embeddings(input_ids=ids)
        for i in (0, 2):
            out = teacher.bert.encoder.layer[i](h)
            h = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple
        expected = teacher.cls(h)
        got = student(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_student_weights_tied_and_teacher_untouched(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    for arch in ("same", "distilbert"):
        student = build_student(teacher, [1, 3], architecture=arch)
        assert student.training
        assert student.get_output_embeddings().weight is student.get_input_embeddings().weight
        with torch.no_grad():
            student.get_input_embeddings().weight.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert teacher.config.num_hidden_layers == 4


def test_distilbert_with_all_layers_equals_bert_teacher(teacher, batch):
    student = build_student(teacher, range(4), architecture="distilbert").eval()
    assert type(student) is DistilBertForMaskedLM and student.config.n_layers == 4
    expected = logits(teacher, {**batch, "token_type_ids": torch.zeros_like(batch["input_ids"])})
    torch.testing.assert_close(logits(student, batch), expected, atol=1e-5, rtol=1e-5)


def test_distilbert_student_saves_and_loads_everywhere(teacher, tokenizer, batch, tmp_path):
    student = build_student(teacher, [0, 3], architecture="distilbert").eval()
    before = logits(student, batch)
    folder = tmp_path / "distil"
    save_student(student, tokenizer, folder)
    reloaded = AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert type(reloaded) is DistilBertForMaskedLM
    torch.testing.assert_close(logits(reloaded, batch), before, atol=1e-6, rtol=1e-6)
    assert type(AutoModel.from_pretrained(folder)).__name__ == "DistilBertModel"
    clf = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    assert clf.config.num_labels == 1
    tok = AutoTokenizer.from_pretrained(folder)
    assert "token_type_ids" not in tok("the query", "the document")
    assert "token_type_ids" in tokenizer("the query", "the document")  # the caller's is unchanged
    assert clf(**tok("the query", "the document", return_tensors="pt")).logits.shape == (1, 1)

    from sentence_transformers import CrossEncoder

    score = CrossEncoder(str(folder), device="cpu").predict([("python list", "sort a list in python")])
    assert len(score) == 1 and torch.isfinite(torch.as_tensor(score)).all()


def test_same_student_saves_and_loads(teacher, tokenizer, batch, tmp_path):
    student = build_student(teacher, [1, 2]).eval()
    before = logits(student, batch)
    folder = tmp_path / "same"
    save_student(student, tokenizer, folder)
    reloaded = AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert reloaded.config.num_hidden_layers == 2
    torch.testing.assert_close(logits(reloaded, batch), before, atol=1e-6, rtol=1e-6)
    assert type(AutoModel.from_pretrained(folder)).__name__ == "BertModel"
    clf = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    assert clf.config.num_labels == 1
    assert "token_type_ids" in AutoTokenizer.from_pretrained(folder)("a", "b")  # BERT keeps segments


def test_save_student_replaces_folder_atomically(teacher, tokenizer, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "stale.txt").write_text("old")
    save_student(build_student(teacher, [0]), tokenizer, folder)
    assert not (folder / "stale.txt").exists() and (folder / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folder left behind


def test_unknown_architecture_and_non_bert_distilbert(teacher, batch):
    with pytest.raises(ConfigError, match=r"\('same', 'distilbert'\)"):
        build_student(teacher, [0], architecture="tinybert")
    distil = build_student(teacher, [0, 1, 2, 3], architecture="distilbert")
    # a DistilBERT teacher: "same" and "distilbert" both give a smaller DistilBERT
    for arch in ("same", "distilbert"):
        smaller = build_student(distil, [1, 3], architecture=arch)
        assert type(smaller) is DistilBertForMaskedLM and smaller.config.n_layers == 2
    full = build_student(distil, range(4)).eval()
    torch.testing.assert_close(logits(full, batch), logits(distil.eval(), batch))
    with pytest.raises(ConfigError, match="out of range"):
        build_student(teacher, [0, 4])


def test_unsupported_teachers_rejected(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel, RobertaConfig, RobertaForMaskedLM

    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32))
    with pytest.raises(ConfigError, match="supported teachers are BERT"):
        build_student(gpt, [0])
    roberta = RobertaForMaskedLM(RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=32))
    assert build_student(roberta, [1]).config.num_hidden_layers == 1
    with pytest.raises(ConfigError, match="needs a BERT masked-LM teacher"):
        build_student(roberta, [1], architecture="distilbert")


def test_distilbert_rejects_other_layer_norm_eps(tokenizer):
    config = bert_config(len(tokenizer))
    config.layer_norm_eps = 1e-5
    with pytest.raises(ConfigError, match="layer_norm_eps"):
        build_student(BertForMaskedLM(config), [0], architecture="distilbert")


@pytest.mark.parametrize("arch", ["same", "distilbert"])
def test_mlm_parts_equal_full_forward_at_masked_positions(teacher, batch, arch):
    student = build_student(teacher, [0, 3], architecture=arch).eval()
    encode, head = mlm_parts(student)
    mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    mask[0, 2], mask[1, 1], mask[1, 4] = True, True, True
    with torch.no_grad():
        got = head(encode(batch["input_ids"], batch["attention_mask"])[mask])  # (3, V)
        full = student(**batch).logits[mask]  # (3, V)
    assert got.shape == (3, len(student.get_input_embeddings().weight))
    torch.testing.assert_close(got, full, atol=1e-6, rtol=1e-6)


def test_mlm_parts_rejects_other_models(tokenizer):
    with pytest.raises(ConfigError, match="ForMaskedLM"):
        mlm_parts(BertModel(bert_config(len(tokenizer))))


def save_teacher(model, tokenizer, folder: Path) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_load_teacher_detects_missing_head(tokenizer, tmp_path):
    torch.manual_seed(1)
    plain = save_teacher(BertModel(bert_config(len(tokenizer))), tokenizer, tmp_path / "plain")
    model, tok, has_head = load_teacher(plain)
    assert has_head is False and isinstance(model, BertForMaskedLM) and not model.training
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert len(tok) == len(tokenizer)


def test_load_teacher_with_head(teacher, tokenizer, tmp_path, batch):
    folder = save_teacher(teacher, tokenizer, tmp_path / "mlm")
    model, _, has_head = load_teacher(folder, dtype=torch.float32)
    assert has_head is True and not model.training
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    torch.testing.assert_close(logits(model, batch), logits(teacher, batch))


@pytest.mark.slow
def test_load_teacher_packaged_minilm_has_no_head():
    model, tok, has_head = load_teacher("packaged:all-MiniLM-L6-v2")
    assert has_head is False
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tok.mask_token is not None


def test_load_teacher_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot load teacher '.*nope'"):
        load_teacher(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="cannot load teacher"):
        load_teacher(str(tmp_path / "empty"))
