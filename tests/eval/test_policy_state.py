"""A deployed policy and the observation's ``state``: read by a policy trained with one, never looked at
by one trained without (tiny untrained models; the trained-run refusals are in test_closed_loop.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from vla_sensor.bench.serving_bench import synthetic_observations
from vla_sensor.data.config import DataConfig
from vla_sensor.data.normalization import ActionStats
from vla_sensor.eval.policy import LoadedPolicy
from vla_sensor.models.vla import build_model

SMALL = {"sensor_hidden_dim": 32, "sensor_output_dim": 48, "head_hidden_dim": 64}


def _stats(dim: int, mean: float = 0.0) -> ActionStats:
    z, o = np.full(dim, mean), np.ones(dim)
    return ActionStats(mean=z, std=o, min=z - 1, max=z + 1, q01=z - 1, q99=z + 1)


def _policy(state_dim: int) -> LoadedPolicy:
    stats = _stats(3)
    stats.state = _stats(state_dim, mean=10.0) if state_dim else None
    model = build_model(SMALL, action_dim=3, horizon=4, view_selection=["left", "oak"], image_size=(56, 56),
                        action_stats=stats, state_dim=state_dim)
    return LoadedPolicy(model, OmegaConf.structured(DataConfig))


def _obs(state: Any = None) -> dict[str, Any]:
    obs = synthetic_observations(1, image_size=56)[0]
    return obs if state is None else {**obs, "state": state}


def test_a_policy_trained_without_state_never_looks_at_it() -> None:
    policy = _policy(0)
    assert policy.state_dim == 0
    plain = policy.new_session().predict(_obs())
    for junk in (np.zeros(7, np.float32), np.array([np.nan]), "not a state"):
        np.testing.assert_array_equal(policy.new_session().predict(_obs(junk)), plain)
    assert "state" not in policy.new_session().batch(_obs(np.zeros(3, np.float32)))


def test_a_policy_trained_with_state_reads_it() -> None:
    policy = _policy(3)
    assert policy.state_dim == 3
    a = np.array([10.0, 10.0, 10.0], np.float32)
    batch = policy.new_session().batch(_obs(a))
    assert batch["state"].shape == (1, 3) and batch["state"].tolist() == [[10.0, 10.0, 10.0]]  # robot units
    first = policy.new_session().predict(_obs(a))
    np.testing.assert_array_equal(policy.new_session().predict(_obs(a.copy())), first)
    moved = policy.new_session().predict(_obs(a + np.float32(3.0)))
    assert not np.allclose(moved, first)  # the state changes the action
    with pytest.raises(ValueError, match=r"state: expected 3 values \(float32 \(3,\)\), got shape \(4,\)"):
        policy.new_session().predict(_obs(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match=r"state: expected 1 dimensions, got shape \(1, 3\)"):
        policy.new_session().predict(_obs(np.zeros((1, 3), np.float32)))
    with pytest.raises(ValueError, match=r"state: expected a numpy array, got list"):
        policy.new_session().predict(_obs([10.0, 10.0, 10.0]))
