"""Two-stage training: which parameters train, LoRA injection, gradient checkpointing.

Stage 1 trains the sensor encoder, the fusion layers and the action head on a frozen VL backbone.
Stage 2 also trains the language model, with LoRA adapters (``peft``) or in full, usually starting
from a stage-1 checkpoint (``QwenVLAWithSensor.from_pretrained(stage1_dir)`` then stage 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from torch import nn

from vla_sensor.models.model_config import LLMTraining, LoraSettings


def linear_module_names(module: nn.Module) -> list[str]:
    """Leaf names of the Linear layers (what LoRA ``target_modules`` can name)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear) and n})


def lora_settings(lora: LoraSettings | Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """``model.lora`` as a plain dict: the schema's defaults, then ``lora``, then ``overrides``."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(LoraSettings), lora or {}, overrides)
    out = OmegaConf.to_container(merged)
    return {"r": int(out["r"]), "alpha": int(out["alpha"]), "dropout": float(out["dropout"]),
            "target_modules": list(out["target_modules"])}


def apply_lora(model: Any, lora: LoraSettings | Mapping[str, Any] | None = None) -> None:
    """Inject LoRA adapters into the backbone's language model (in place, idempotent per config)."""
    from peft import LoraConfig, inject_adapter_in_model

    settings = lora_settings(asdict(lora) if isinstance(lora, LoraSettings) else lora)
    if getattr(model, "lora_settings", None) is not None:
        if model.lora_settings != settings:
            raise ValueError(f"model already has LoRA {model.lora_settings}; cannot re-inject with {settings}")
        return
    if settings["r"] < 1:
        raise ValueError(f"model.lora.r must be >= 1, got {settings['r']}")
    lm = model.backbone.language_model
    available = linear_module_names(lm)
    missing = [t for t in settings["target_modules"] if t not in available]
    if missing or not settings["target_modules"]:
        raise ValueError(
            f"LoRA target module(s) {missing or '[]'} not found in the language model; "
            f"expected names among its Linear layers: {available}"
        )
    config = LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                        target_modules=settings["target_modules"], bias="none")
    inject_adapter_in_model(config, lm)
    model.lora_settings = settings


def _set(module: nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


def configure_stage(
    model: Any,
    stage: int = 1,
    llm: LLMTraining | str = LLMTraining.lora,
    lora: LoraSettings | Mapping[str, Any] | None = None,
    train_vision: bool = False,
) -> dict[str, int]:
    """Freeze/unfreeze ``model`` for a training stage; returns trainable/total parameter counts.

    ``lora``: the ``model.lora`` settings (unset fields: the schema's defaults), used when stage 2
    trains the LLM through LoRA.
    """
    llm = getattr(llm, "value", llm)
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    if llm not in ("lora", "full"):
        raise ValueError(f"llm must be 'lora' or 'full', got {llm!r}")
    if stage == 2 and llm == "lora":
        apply_lora(model, lora)

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
