"""Soft prompts: N trainable virtual tokens prepended to an encoder's input embeddings.

The virtual tokens come from PEFT's own modules: ``PromptEmbedding`` (prompt tuning, Lester et al.
2021, initialised from randomly drawn vocabulary embeddings) or ``PromptEncoder`` (P-tuning, Liu
et al. 2021: an MLP re-parameterises the token embeddings). The concatenation is done here rather
than by ``peft.PeftModel`` so that any encoder task (classification, QA, reranking) can use it with
its own head: the model sees ``[v_1 .. v_N, [CLS], q.., [SEP], d.., [SEP]]`` with attention on
the virtual tokens and segment id 0 for them, exactly as PEFT's sequence-classification wrapper.

Saved next to the model as ``soft_prompt/adapter_config.json`` (PEFT's config) and
``soft_prompt/prompt.safetensors``; the model folder itself stays a plain Hugging Face checkpoint
holding the (trained or frozen) backbone and the task head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distilrank.errors import ConfigError, MissingExtraError

PROMPT_DIR = "soft_prompt"
WEIGHTS = "prompt.safetensors"


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise MissingExtraError("peft", "prompt") from None
    return peft


def _peft_config(method: str, num_tokens: int, model: nn.Module) -> Any:
    peft = _peft()
    cfg = model.config
    common = dict(num_virtual_tokens=num_tokens, token_dim=cfg.hidden_size, num_transformer_submodules=1,
                  num_attention_heads=cfg.num_attention_heads, num_layers=cfg.num_hidden_layers)
    if method == "prompt_tuning":
        return peft.PromptTuningConfig(prompt_tuning_init="SAMPLE_VOCAB", **common)
    if method == "p_tuning":
        return peft.PromptEncoderConfig(encoder_reparameterization_type="MLP",
                                        encoder_hidden_size=cfg.hidden_size, **common)
    raise ConfigError(f"prompt_method must be prompt_tuning or p_tuning, got {method!r}")


class SoftPrompt(nn.Module):
    """``forward(batch_size) -> (B, N, H)`` virtual token embeddings (PEFT prompt modules)."""

    def __init__(self, peft_config: Any, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        peft = _peft()
        self.peft_config = peft_config
        if peft_config.peft_type == peft.PeftType.PROMPT_TUNING:
            self.encoder: nn.Module = peft.PromptEmbedding(peft_config, word_embeddings)
        else:
            self.encoder = peft.PromptEncoder(peft_config)
        self.register_buffer("indices", torch.arange(peft_config.num_virtual_tokens), persistent=False)

    @classmethod
    def create(cls, model: nn.Module, num_tokens: int, method: str = "prompt_tuning") -> SoftPrompt:
        """New virtual tokens for ``model`` (a transformers encoder with a task head)."""
        return cls(_peft_config(method, num_tokens, model), model.get_input_embeddings())

    @property
    def num_tokens(self) -> int:
        return int(self.peft_config.num_virtual_tokens)

    @property
    def method(self) -> str:
        return "prompt_tuning" if self.peft_config.peft_type == _peft().PeftType.PROMPT_TUNING else "p_tuning"

    def forward(self, batch_size: int) -> Tensor:
        prompts = self.encoder(self.indices.unsqueeze(0))  # (1, N, H)
        return prompts.expand(batch_size, -1, -1)  # (B, N, H)

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        out = Path(folder) / PROMPT_DIR
        out.mkdir(parents=True, exist_ok=True)
        self.peft_config.save_pretrained(str(out))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}, out / WEIGHTS)

    @classmethod
    def load(cls, folder: str | Path, model: nn.Module) -> SoftPrompt | None:
        """The soft prompt saved in ``folder``, or ``None`` when the folder has none."""
        src = Path(folder) / PROMPT_DIR
        if not (src / WEIGHTS).is_file():
            return None
        from safetensors.torch import load_file

        config = _peft().PeftConfig.from_pretrained(str(src))
        config.inference_mode = False  # PromptEncoder builds its MLP only outside inference mode
        prompt = cls(config, model.get_input_embeddings())
        prompt.encoder.load_state_dict(load_file(str(src / WEIGHTS)))
        return prompt


def prompted_inputs(model: nn.Module, prompt: SoftPrompt, features: dict[str, Tensor]) -> dict[str, Tensor]:
    """Model inputs with the virtual tokens in front: ``inputs_embeds (B, N+L, H)`` and the masks."""
    ids = features["input_ids"]  # (B, L)
    embeds = model.get_input_embeddings()(ids)  # (B, L, H)
    b, n = ids.shape[0], prompt.num_tokens
    virtual = prompt(b).to(device=embeds.device, dtype=embeds.dtype)  # (B, N, H)
    out: dict[str, Tensor] = {"inputs_embeds": torch.cat([virtual, embeds], dim=1)}  # (B, N+L, H)
    mask = features.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(ids)
    out["attention_mask"] = torch.cat([mask.new_ones(b, n), mask], dim=1)  # (B, N+L)
    if features.get("token_type_ids") is not None:
        segments = features["token_type_ids"]
        out["token_type_ids"] = torch.cat([segments.new_zeros(b, n), segments], dim=1)  # (B, N+L)
    return out


def freeze_backbone(model: nn.Module) -> None:
    """Freeze the encoder (``model.base_model``): only the task head (and a soft prompt) train."""
    for p in model.base_model.parameters():
        p.requires_grad_(False)


def count_parameters(*modules: nn.Module | None) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts over ``modules``."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
