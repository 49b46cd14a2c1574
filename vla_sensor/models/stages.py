"""Two-stage training: which parameters train, LoRA injection, gradient checkpointing.

Stage 1 trains the sensor encoder, the fusion layers and the action head on a frozen VL backbone.
Stage 2 also trains the language model, with LoRA adapters (``peft``) or in full, usually starting
from a stage-1 checkpoint (``QwenVLAWithSensor.from_pretrained(stage1_dir)`` then stage 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_module_names(module: nn.Module) -> list[str]:
    """Leaf names of the Linear layers (what LoRA ``target_modules`` can name)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear) and n})


def apply_lora(
    model: Any,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: Sequence[str] = DEFAULT_LORA_TARGETS,
) -> None:
    """Inject LoRA adapters into the backbone's language model (in place, idempotent per config)."""
    from peft import LoraConfig, inject_adapter_in_model

    settings = {"r": int(r), "alpha": int(alpha), "dropout": float(dropout), "target_modules": list(target_modules)}
    if getattr(model, "lora_settings", None) is not None:
        if model.lora_settings != settings:
            raise ValueError(f"model already has LoRA {model.lora_settings}; cannot re-inject with {settings}")
        return
    if r < 1:
        raise ValueError(f"lora_r must be >= 1, got {r}")
    lm = model.backbone.language_model
    available = linear_module_names(lm)
    missing = [t for t in settings["target_modules"] if t not in available]
    if missing or not settings["target_modules"]:
        raise ValueError(
            f"LoRA target module(s) {missing or '[]'} not found in the language model; "
            f"expected names among its Linear layers: {available}"
        )
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=settings["target_modules"], bias="none")
    inject_adapter_in_model(config, lm)
    model.lora_settings = settings


def _set(module: nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


def configure_stage(
    model: Any,
    stage: int = 1,
    llm: str = "lora",
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    lora_target_modules: Sequence[str] | None = None,
    train_vision: bool = False,
) -> dict[str, int]:
    """Freeze/unfreeze ``model`` for a training stage; returns trainable/total parameter counts."""
    llm = getattr(llm, "value", llm)
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    if llm not in ("lora", "full"):
        raise ValueError(f"llm must be 'lora' or 'full', got {llm!r}")
    if stage == 2 and llm == "lora":
        apply_lora(model, lora_r, lora_alpha, lora_dropout, lora_target_modules or DEFAULT_LORA_TARGETS)

    _set(model, False)
    for module in model.policy_modules():
        _set(module, True)
    if stage == 2:
        lm = model.backbone.language_model
        if llm == "full":
            _set(lm, True)
        else:
            for name, p in lm.named_parameters():
                if "lora_" in name:
                    p.requires_grad_(True)
        if train_vision:
            _set(model.backbone.visual, True)
    model.stage = stage
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total}
