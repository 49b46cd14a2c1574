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
    """The sensor encoder's own choices (``conf/encoder/``): arguments of
    :class:`vla_sensor.models.sensor_encoder.SensorEncoder`.

    Its sizes are not here, each has one owner elsewhere: ``input_channels`` follows the data's
    channel count, ``hidden_dim``/``output_dim`` are ``model.sensor_hidden_dim``/``sensor_output_dim``
    and ``num_tokens`` is ``model.num_sensor_tokens`` (the fusion layers are sized from them).
    """

    temporal_length: int = 650
    num_conv_layers: int = 4
    use_transformer: bool = True
    num_transformer_layers: int = 2
    nhead: int = 8
    dropout: float = 0.1
    # recompute activations in backward (also set by trainer/checkpointing=sensor|all)
    gradient_checkpointing: bool = False
    interpolation_mode: InterpolationMode = InterpolationMode.linear
    check_finite: bool = True
