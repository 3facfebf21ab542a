"""Soft prompts: same logits as PEFT's own wrapper, frozen backbone, save/reload with the head."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from test_nli import toy_nli
from tiny import jsonl

from distilrank import ConfigError, TrainConfig
from distilrank.models.heads import HeadOptions, PairClassifier, QuestionAnswerer
from distilrank.models.prompts import PROMPT_DIR, SoftPrompt
from distilrank.training.run import run_training

pytest.importorskip("peft")

PAIRS = [("the data of the file", "a list of items"), ("sort the list", "return the value")]


def _classifier(folder, **kw) -> PairClassifier:
    torch.manual_seed(0)
    return PairClassifier.from_pretrained(str(folder), ["entailment", "not_entailment"],
                                          HeadOptions(max_length=32, **kw))


def test_logits_equal_peft_prompt_tuning_wrapper(tiny_model):
    import peft

    model = _classifier(tiny_model, prompt_tokens=5).eval()
    ref_cfg = peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=5)
    reference = peft.get_peft_model(model.model, ref_cfg).eval()
    reference.prompt_encoder["default"].embedding.weight.data.copy_(model.prompt.encoder.embedding.weight)
    features = model.tokenize(*zip(*PAIRS))
    with torch.no_grad():
        ours = model(**features)
        theirs = reference(**features).logits
    assert torch.allclose(ours, theirs, atol=1e-6)
    with torch.no_grad():
        plain = model.model(**features).logits  # the prompt changes the logits
    assert not torch.allclose(ours, plain)


def test_frozen_backbone_trains_only_prompt_and_head(tiny_model):
    model = _classifier(tiny_model, prompt_tokens=4, freeze_backbone=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"model.classifier.weight", "model.classifier.bias", "prompt.encoder.embedding.weight"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = torch.nn.functional.cross_entropy(model(**model.tokenize(*zip(*PAIRS))), torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_save_and_reload_gives_identical_logits_and_keeps_the_head(tiny_model, tmp_path, method):
    model = _classifier(tiny_model, prompt_tokens=3, prompt_method=method)
    with torch.no_grad():  # move every part away from its initial value
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / PROMPT_DIR / "adapter_config.json").exists()
    weights = load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert torch.equal(weights["classifier.weight"], model.model.classifier.weight.detach())
    again = PairClassifier.from_pretrained(str(tmp_path / "saved"))
    assert again.prompt is not None and again.prompt.method == method and again.prompt.num_tokens == 3
    assert torch.equal(model.predict_logits(PAIRS), again.predict_logits(PAIRS))


def test_qa_model_with_a_prompt_returns_logits_over_text_tokens_only(tiny_model, tmp_path):
    qa = QuestionAnswerer.from_pretrained(str(tiny_model), HeadOptions(max_length=48, prompt_tokens=6))
    features = qa.tokenizer(["the query"], ["a document of the data"], return_tensors="pt")
    start, end = qa(**features)
    assert start.shape == end.shape == features["input_ids"].shape
    assert qa.text_length == 42
    qa.save_pretrained(tmp_path / "qa")
    again = QuestionAnswerer.from_pretrained(str(tmp_path / "qa"))
    qa.eval()
    again.eval()
    assert torch.equal(qa(**features)[0], again(**features)[0])


def test_prompt_training_run_with_frozen_and_unfrozen_backbone(tiny_model, tmp_path):
    train = jsonl(tmp_path / "train.jsonl", toy_nli(16))
    common = dict(train_file=str(train), model=str(tiny_model), task="nli", max_steps=3, batch_size=4,
                  max_length=32, learning_rate=1e-2, prompt_tokens=4)
    frozen = run_training(TrainConfig(output_dir=str(tmp_path / "frozen"), freeze_backbone=True, **common))
    full = run_training(TrainConfig(output_dir=str(tmp_path / "full"), **common))
    assert frozen["method"] == "prompt-4" and full["method"] == "prompt-4+backbone"
    assert frozen["trainable_params"] == 4 * 32 + 2 * 32 + 2  # prompt (N x H) + classifier
    assert full["trainable_params"] == full["total_params"]
    start = load_file(str(tiny_model / "model.safetensors"))
    frozen_w = load_file(str(tmp_path / "frozen" / "model" / "model.safetensors"))
    full_w = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(frozen_w[key], start[key])  # frozen backbone saved unchanged
    assert not torch.equal(full_w[key], start[key])  # trained backbone saved with its changes
    model = PairClassifier.from_pretrained(str(tmp_path / "frozen" / "model"))
    assert SoftPrompt.load(tmp_path / "frozen" / "model", model.model) is not None


def test_config_rejects_prompts_on_rerank_task():
    with pytest.raises(ConfigError, match="apply to task=nli or task=qa"):
        TrainConfig(train_file="x.jsonl", prompt_tokens=4)
    with pytest.raises(ConfigError, match="prompt_method"):
        TrainConfig(train_file="x.jsonl", task="nli", prompt_tokens=4, prompt_method="lora")
