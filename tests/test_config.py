import pytest

from distilrank import ConfigError, TrainConfig, load_config
from distilrank.config import parse_overrides


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train_file: a.jsonl\nmax_steps: 10\nloss: bce\n")
    cfg = load_config(TrainConfig, f, ["max_steps=20", "learning_rate=3e-5", "resume=true"])
    assert (cfg.train_file, cfg.max_steps, cfg.loss, cfg.learning_rate, cfg.resume) == ("a.jsonl", 20, "bce", 3e-5, True)


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["a=1", "b=2.5", "c=text", "d=", "e=true"]) == {"a": 1, "b": 2.5, "c": "text", "d": "", "e": True}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["oops"])


@pytest.mark.parametrize("override, message", [
    ("max_stpes=3", "did you mean 'max_steps'"),
    ("max_steps=-1", "max_steps must be >= 0"),
    ("max_steps=1.5", "must be an integer"),
    ("loss=hinge", "loss must be one of"),
    ("learning_rate=5", "absurd"),
    ("warmup_ratio=2", r"warmup_ratio must be in \[0, 1\]"),
    ("batch_size=abc", "batch_size must be an integer"),
    ("max_length=100000", "max_length must be in"),
    ("mixed_precision=fp8", "mixed_precision must be one of"),
])
def test_absurd_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, ["train_file=x.jsonl", override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(TrainConfig, bad)
