"""Typed Hydra schema of the ``model`` group (``conf/model/*.yaml``).

Torch-free so composing or printing a config stays cheap. Enums use member names equal to their
values so that OmegaConf accepts ``model.fusion=tokens`` and rejects a typo with the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional


class Fusion(str, Enum):
    """How the sensor stream reaches the action head."""

    late = "late"  # pooled sensor feature concatenated with the pooled VL feature
    tokens = "tokens"  # sensor tokens injected into the backbone's input sequence


class LossType(str, Enum):
    """The action loss on normalised actions (``huber``: smooth L1, quadratic below ``huber_delta``)."""

    l1 = "l1"
    mse = "mse"
    huber = "huber"


class Pooling(str, Enum):
    """How the VL feature is read from the backbone's last hidden states."""

    last = "last"  # hidden state of the last non-pad token (the assistant turn's start)
    mean = "mean"  # masked mean over all non-pad tokens
    attention = "attention"  # learned queries cross-attending over all tokens, 2-D positions for image tokens
    flatten = "flatten"  # the image tokens in grid order, concatenated, one linear layer (readout_dim)


class BackboneFamily(str, Enum):
    qwen2_5_vl = "qwen2_5_vl"
    qwen2_vl = "qwen2_vl"


class TorchDtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    auto = "auto"


class AttnImplementation(str, Enum):
    eager = "eager"
    sdpa = "sdpa"
    flash_attention_2 = "flash_attention_2"


class LLMTraining(str, Enum):
    """What stage 2 trains in the language model."""

    lora = "lora"
    full = "full"


@dataclass
class ImageConfig:
    """Image-processor bounds (pixels); a view already inside them is used at its own size."""

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280


@dataclass
class BackboneConfig:
    """Where the Qwen-VL backbone comes from.

    ``name_or_path``: a local checkpoint directory or a hub id, loaded with ``from_pretrained``
    (``HF_HUB_OFFLINE=1`` keeps that to the local cache). ``random_init=true`` instead builds the
    architecture in ``arch`` (Qwen config keyword arguments) with random weights and an offline
    byte-level tokenizer: the tiny test/demo model, or a real-size model for throughput benchmarks.
    """

    name_or_path: str | None = None
    family: BackboneFamily = BackboneFamily.qwen2_5_vl
    random_init: bool | None = None  # None: random weights unless name_or_path is given
    torch_dtype: TorchDtype = TorchDtype.float32
    attn_implementation: AttnImplementation = AttnImplementation.sdpa
    arch: dict[str, Any] = field(default_factory=dict)  # empty with random weights: the tiny test backbone
    image: ImageConfig = field(default_factory=ImageConfig)


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelConfig:
    """What :class:`vla_sensor.models.vla.QwenVLAWithSensor` is built from (see ``build_model``)."""

    name: str = "tiny"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    sensor_enabled: bool = True
    sensor_hidden_dim: int = 512
    sensor_output_dim: int = 3072
    fusion: Fusion = Fusion.late
    num_sensor_tokens: int = 8
    pooling: Pooling = Pooling.last
    readout_queries: int = 4  # pooling=attention: learned queries (the head reads queries x hidden values)
    readout_heads: int = 4  # pooling=attention: attention heads (must divide the backbone's hidden size)
    readout_dim: int = 256  # pooling=flatten: width of the linear map from the token grid
    loss: LossType = LossType.l1
    huber_delta: float = 1.0  # loss=huber: where the loss turns from quadratic to linear (normalised units)
    # Per-action-dimension loss weights (empty: all 1); e.g. [4, 4, 1] weighs dx, dy four times dz.
    loss_weights: list[float] = field(default_factory=list)
    # Proprioceptive state (batch key ``state``) through a projector into the fusion.
    # None: on when the training data has state; true without state in the data is an error.
    use_state: Optional[bool] = None  # noqa: UP045
    state_hidden_dim: int = 64
    head_hidden_dim: int = 256
    head_num_layers: int = 2
    head_dropout: float = 0.0
    # Stage-2 settings (the stage itself is trainer.stage).
    llm_training: LLMTraining = LLMTraining.lora
    train_vision: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
