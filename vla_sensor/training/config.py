"""Typed Hydra schemas of the ``trainer/`` and ``logger/`` groups.

Torch-free so that composing or printing a config stays cheap. Choices are Enums: OmegaConf rejects a
wrong value at composition time and lists the allowed ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


def choice(value: Any) -> Any:
    """A config choice as its plain value: an Enum member's ``value``, anything else as it is."""
    return getattr(value, "value", value)


class MixedPrecision(str, Enum):
    """Accelerate's mixed-precision modes (names equal values so the CLI accepts ``bf16``)."""

    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


class Stage(str, Enum):
    """Two-stage training: stage 1 trains the sensor path with the VL backbone frozen; stage 2 the LLM too."""

    stage1 = "stage1"
    stage2_lora = "stage2_lora"
    stage2_full = "stage2_full"


@dataclass
class GradCheckpointingConfig:
    """Activation checkpointing of the backbone (``trainer/checkpointing``): trade compute for memory.

    The sensor encoder's is ``encoder.gradient_checkpointing`` (set by the ``sensor`` and ``all`` options).
    """

    backbone: bool = False


@dataclass
class StageConfig:
    """Which parameters train (``trainer/stage``); LoRA settings live in ``model.lora``."""

    name: Stage = Stage.stage1
    init_from: str | None = None  # stage 2: a stage-1 run directory, its ``final/`` export or a checkpoint


@dataclass
class EMAConfig:
    """Exponential moving average of the trainable weights; the export uses the EMA weights when on."""

    enabled: bool = False
    decay: float = 0.999


@dataclass
class TrainerConfig:
    """Optimisation, schedule, evaluation cadence, checkpoints and resume."""

    # What is trained: a function ``(cfg, accelerator) -> Components`` given as a dotted path.
    components: str = "vla_sensor.training.components.build_components"
    max_steps: int | None = 200  # optimizer steps; None: ``epochs`` full passes
    epochs: int | None = None
    # End this launch after this many optimizer steps, the schedule still spanning max_steps: for
    # time-limited cluster slots (resubmit with trainer.resume=auto) and for resume tests.
    stop_at_step: int | None = None
    grad_accum_steps: int = 1  # micro-batches (of data.batch_size per process) per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0  # <= 0 disables clipping (the norm is still logged)
    mixed_precision: MixedPrecision = MixedPrecision.no
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpointing: GradCheckpointingConfig = field(default_factory=GradCheckpointingConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    log_every: int = 10
    val_every: int = 50  # 0 disables validation during training (a final one still runs)
    val_batches: int | None = 8  # per process; None: the whole validation split
    save_every: int = 100  # 0 disables periodic checkpoints
    keep_last: int = 2
    resume: str | None = None  # None, "auto", or a run / checkpoint directory
    expected_world_size: int | None = None
    find_unused_parameters: bool = False  # DDP: true if some parameters get no gradient in some steps
    export: bool = True
    progress_bar: bool = True
    # Stage 1 with late fusion: the frozen backbone's pooled feature of every sample computed once and
    # memory-mapped from disk; steps then skip the images and the backbone (docs/training.md).
    feature_cache: bool = False
    feature_cache_dir: str | None = None  # None: data.cache_strategy.cache_dir, else the default cache dir


class WandbMode(str, Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class WandbConfig:
    """Weights & Biases; offline unless ``mode`` or the ``WANDB_MODE`` environment variable says online."""

    enabled: bool = True
    project: str = "vla-sensor"
    entity: str | None = None
    mode: WandbMode | None = None  # None: $WANDB_MODE, else offline
    group: str | None = None  # None: the sweep's name in a multirun
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    """Trackers: a local ``metrics.jsonl`` (no account needed) and W&B."""

    jsonl: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)
