"""The action-error metrics against a hand computation."""

from __future__ import annotations

import pytest
import torch

from vla_sensor.eval.metrics import ActionErrorAccumulator


def test_metrics_match_hand_computation_and_skip_padding() -> None:
    # two samples, horizon 2, one action dim; sample 1 has no sensor and its 2nd step is padding
    pred = torch.tensor([[[1.0], [3.0]], [[0.0], [100.0]]])
    target = torch.tensor([[[0.0], [1.0]], [[2.0], [0.0]]])
    is_pad = torch.tensor([[False, False], [False, True]])
    has_sensor = torch.tensor([True, False])
    acc = ActionErrorAccumulator(horizon=2, action_dim=1)
    acc.update(pred, target, is_pad, has_sensor)
    s = acc.summary()
    # errors of valid steps: 1, 2 (sensor), 2 (no sensor); the padded 100 never counts
    assert s["all"]["num_action_steps"] == 3
    assert s["all"]["l1"] == pytest.approx((1 + 2 + 2) / 3)
    assert s["all"]["mse"] == pytest.approx((1 + 4 + 4) / 3)
    assert s["all"]["l1_per_horizon_step"] == pytest.approx([1.5, 2.0])
    assert s["with_sensor"]["l1"] == pytest.approx(1.5)
    assert s["without_sensor"]["mse"] == pytest.approx(4.0)
    assert s["all"]["l1_per_action_dim"] == pytest.approx([5 / 3])


def test_batching_does_not_change_the_result() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(6, 3, 2, generator=g), torch.randn(6, 3, 2, generator=g)
    is_pad = torch.rand(6, 3, generator=g) > 0.7
    has_sensor = torch.tensor([True, False, True, True, False, True])
    whole, split = ActionErrorAccumulator(3, 2), ActionErrorAccumulator(3, 2)
    whole.update(pred, target, is_pad, has_sensor)
    for sl in (slice(0, 4), slice(4, 6)):
        split.update(pred[sl], target[sl], is_pad[sl], has_sensor[sl])
    a, b = whole.summary(), split.summary()
    for group in a:
        for key, value in a[group].items():
            assert b[group][key] == pytest.approx(value), (group, key)


def test_shape_mismatch_is_a_clear_error() -> None:
    acc = ActionErrorAccumulator(horizon=2, action_dim=3)
    with pytest.raises(ValueError, match=r"\(B, 2, 3\)"):
        acc.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, dtype=torch.bool),
                   torch.ones(1, dtype=torch.bool))
