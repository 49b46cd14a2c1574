"""A tiny random-weight policy shared by the serving tests, and observations for it."""

from __future__ import annotations

import numpy as np
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


def observation_stream(seed: int, steps: int, start: float = 0.0, rows: int = 65) -> list[dict]:
    """``steps`` observations of 64x64 images and ``rows`` new sensor samples each, from time ``start``."""
    rng = np.random.default_rng(seed)
    out, t = [], start
    for _ in range(steps):
        ts = t + np.arange(1, rows + 1) / 650.0
        t = float(ts[-1])
        out.append({"images": {v: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for v in VIEWS},
                    "sensor": {"timestamps": ts, "values": rng.standard_normal((rows, 1026)).astype(np.float32)},
                    "instruction": "insert the needle"})
    return out
