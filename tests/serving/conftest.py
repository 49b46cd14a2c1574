"""A tiny random-weight policy shared by the serving tests, and observations for it."""

from __future__ import annotations

import pytest

VIEWS = ["left", "oak"]


@pytest.fixture(scope="session")
def loaded_policy():
    """The tiny model (random weights) as a shareable policy with the dataset's default window settings."""
    from omegaconf import OmegaConf

    from vla_sensor.data.config import DataConfig
    from vla_sensor.eval.policy import LoadedPolicy
    from vla_sensor.models.vla import build_model

    model = build_model({"sensor_hidden_dim": 64, "sensor_output_dim": 128}, action_dim=3, horizon=8,
                        view_selection=VIEWS, image_size=(56, 56))
    return LoadedPolicy(model, OmegaConf.structured(DataConfig))


def observation_stream(seed: int, steps: int, start: float = 0.0) -> list[dict]:
    """``steps`` observations of 64x64 images and 65 new sensor samples each, from time ``start``."""
    from vla_sensor.bench.serving_bench import synthetic_observations

    return synthetic_observations(steps, seed=seed, image_size=64, start=start)
