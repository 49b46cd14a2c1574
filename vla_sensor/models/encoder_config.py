"""Typed Hydra schema of the sensor encoder (``conf/encoder/``).

Kept free of torch so that composing or printing a config stays cheap. The interpolation mode is an
Enum so that a wrong value fails when the config is composed, with the allowed values in the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class InterpolationMode(str, Enum):
    """How a sensor window is resampled to the encoder's ``temporal_length``.

    Member names equal their values so that OmegaConf (which matches Enum nodes by name) accepts
    ``encoder.interpolation_mode=cubic`` and the encoder accepts the plain string as well.
    """

    linear = "linear"
    nearest = "nearest"
    cubic = "cubic"

    @classmethod
    def parse(cls, value: InterpolationMode | str) -> InterpolationMode:
        """Accept a member or its string value; reject anything else listing the allowed values."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"interpolation_mode must be one of [{allowed}], got {value!r}")


@dataclass
class EncoderConfig:
    """Constructor arguments of :class:`vla_sensor.models.sensor_encoder.SensorEncoder`."""

    _target_: str = "vla_sensor.models.sensor_encoder.SensorEncoder"
    input_channels: int = 1026
    temporal_length: int = 650
    hidden_dim: int = 512
    output_dim: int = 3072
    num_conv_layers: int = 4
    use_transformer: bool = True
    num_transformer_layers: int = 2
    nhead: int = 8
    dropout: float = 0.1
    gradient_checkpointing: bool = False
    interpolation_mode: InterpolationMode = InterpolationMode.linear
    num_tokens: int = 8
    check_finite: bool = True
