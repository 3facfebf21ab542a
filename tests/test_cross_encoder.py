import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilrank import ConfigError, CrossEncoder, Reranker
from distilrank.models.cross_encoder import keep_first_layers

PAIRS = [
    ("sort a list", "return a new sorted list from the items"),
    ("open a file", "open file and return a stream"),
    ("python", "the python data model"),
    ("a much longer query about reading and writing files in python", "read data"),
]


def test_saved_model_scores_equal_transformers_and_sentence_transformers(tiny_model, tmp_path):
    ours = CrossEncoder.from_pretrained(str(tiny_model), max_length=64)
    ours.save_pretrained(tmp_path / "m")
    mine = Reranker.load(tmp_path / "m").score(PAIRS)

    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        feats = tok([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation=True,
                    max_length=64, return_tensors="pt")
        ref = hf(**feats).logits.view(-1).tolist()
    assert max(abs(a - b) for a, b in zip(mine, ref)) <= 1e-4

    from sentence_transformers import CrossEncoder as STCrossEncoder

    st = STCrossEncoder(str(tmp_path / "m"), device="cpu")
    st_scores = st.predict(PAIRS, batch_size=3).tolist()
    assert max(abs(a - b) for a, b in zip(mine, st_scores)) <= 1e-4


def test_scores_do_not_depend_on_batching_or_order(tiny_model):
    model = CrossEncoder.from_pretrained(str(tiny_model))
    one = model.score(PAIRS, batch_size=1)
    many = model.score(PAIRS, batch_size=64)
    rev = model.score(PAIRS[::-1], batch_size=2)[::-1]
    assert one == pytest.approx(many, abs=1e-5)
    assert one == pytest.approx(rev, abs=1e-5)


def test_keep_first_layers_cuts_the_stack(tiny_model):
    model = CrossEncoder.from_pretrained(str(tiny_model), num_layers=1)
    assert model.model.config.num_hidden_layers == 1
    assert len(model.model.bert.encoder.layer) == 1
    with pytest.raises(ConfigError, match="num_layers must be in"):
        keep_first_layers(model.model, 5)


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot load model"):
        CrossEncoder.from_pretrained(str(tmp_path / "nothing-here"))


@pytest.mark.slow
def test_packaged_minilm_scores_equal_sentence_transformers(tmp_path):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    ours = CrossEncoder.from_pretrained("packaged:all-MiniLM-L6-v2", max_length=128, allow_new_head=True)
    ours.save_pretrained(tmp_path / "m")
    mine = Reranker.load(tmp_path / "m").score(PAIRS)
    st = STCrossEncoder(str(tmp_path / "m"), device="cpu").predict(PAIRS).tolist()
    assert max(abs(a - b) for a, b in zip(mine, st)) <= 1e-4
