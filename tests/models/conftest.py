"""Fixtures for the fused-model tests: tiny random policies and hand-built batches.

Batches follow docs/ARCHITECTURE.md (sample -> model sample_transform -> collate), built here by hand
so these tests do not depend on the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

VIEWS = ["left", "oak"]
IMAGE_SIZE = (56, 56)
SENSOR_T = 48  # short windows keep the tests fast; the encoder resamples to ENC_T
ENC_T = 32
CHANNELS = 1026
ACTION_DIM = 7
HORIZON = 4


def small_encoder_kwargs() -> dict[str, Any]:
    return {"temporal_length": ENC_T, "num_conv_layers": 2, "num_transformer_layers": 1, "nhead": 4, "dropout": 0.0}


def make_tiny_model(**kwargs: Any) -> Any:
    """A small policy; ``model`` config fields (fusion, loss, ...) among ``kwargs`` go into its config."""
    from vla_sensor.models.vla import MODEL_FIELDS, QwenVLAWithSensor

    config: dict[str, Any] = {"sensor_enabled": True, "sensor_hidden_dim": 32, "sensor_output_dim": 48,
                              "num_sensor_tokens": 4, "head_hidden_dim": 64}
    config.update({k: kwargs.pop(k) for k in list(kwargs) if k in MODEL_FIELDS})
    args: dict[str, Any] = dict(config=config, action_dim=ACTION_DIM, horizon=HORIZON,
                                encoder=small_encoder_kwargs(), view_selection=VIEWS, image_size=IMAGE_SIZE)
    args.update(kwargs)
    return QwenVLAWithSensor(**args)


def make_samples(batch_size: int, seed: int = 0, no_sensor: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """Dataset-style samples (before the model transform), per the batch contract."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for b in range(batch_size):
        length = 0 if b in no_sensor else SENSOR_T - (b % 3) * 5
        sensor = torch.zeros(SENSOR_T, CHANNELS)
        if length:
            sensor[SENSOR_T - length :] = torch.randn(length, CHANNELS, generator=g)
        pad = torch.zeros(HORIZON, dtype=torch.bool)
        pad[HORIZON - (b % 3) :] = True
        samples.append(
            {
                "images": torch.randint(0, 256, (len(VIEWS), 3, *IMAGE_SIZE), dtype=torch.uint8, generator=g),
                "actions": torch.randn(HORIZON, ACTION_DIM, generator=g) * 3 + 1,
                "action_is_pad": pad,
                "sensor_data": sensor,
                "sensor_length": length,
                "has_sensor": length > 0,
                "instruction": "insert the needle" + " now" * (b % 2),
                "trajectory_index": 0,
                "step_index": b,
            }
        )
    return samples


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The collate of the batch contract: stack, left-pad sensor, concat pixels, right-pad ids."""
    out: dict[str, Any] = {}
    t_max = max(s["sensor_data"].shape[0] for s in samples)
    sensor = torch.zeros(len(samples), t_max, CHANNELS)
    for i, s in enumerate(samples):
        sensor[i, t_max - s["sensor_data"].shape[0] :] = s["sensor_data"]
    out["sensor_data"] = sensor
    out["sensor_lengths"] = torch.tensor([s["sensor_length"] for s in samples], dtype=torch.long)
    out["has_sensor_mask"] = torch.tensor([s["has_sensor"] for s in samples], dtype=torch.bool)
    out["actions"] = torch.stack([s["actions"] for s in samples])
    out["action_is_pad"] = torch.stack([s["action_is_pad"] for s in samples])
    out["instruction"] = [s["instruction"] for s in samples]
    if "images" in samples[0]:
        out["images"] = torch.stack([s["images"] for s in samples])
    if "pixel_values" in samples[0]:
        out["pixel_values"] = torch.cat([s["pixel_values"] for s in samples])
        out["image_grid_thw"] = torch.cat([s["image_grid_thw"] for s in samples])
        n = max(len(s["input_ids"]) for s in samples)
        out["input_ids"] = torch.zeros(len(samples), n, dtype=torch.long)
        out["attention_mask"] = torch.zeros(len(samples), n, dtype=torch.long)
        for i, s in enumerate(samples):
            out["input_ids"][i, : len(s["input_ids"])] = s["input_ids"]
            out["attention_mask"][i, : len(s["attention_mask"])] = s["attention_mask"]
    return out


@pytest.fixture
def tiny_model_factory() -> Callable[..., Any]:
    def factory(**kwargs: Any) -> Any:
        torch.manual_seed(kwargs.pop("seed", 0))
        return make_tiny_model(**kwargs)

    return factory


@pytest.fixture
def batch_for() -> Callable[..., dict[str, Any]]:
    """batch_for(model, batch_size=4, seed=0, no_sensor=()) -> collated batch through the model transform."""

    def build(model: Any, batch_size: int = 4, seed: int = 0, no_sensor: tuple[int, ...] = ()) -> dict[str, Any]:
        transform = model.build_sample_transform(VIEWS, IMAGE_SIZE)
        return collate([transform(s) for s in make_samples(batch_size, seed, no_sensor)])

    return build
