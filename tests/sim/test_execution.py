"""Receding-horizon and temporal-ensembling execution of action chunks."""

from __future__ import annotations

import numpy as np
import pytest

from vla_sensor.execution import ActionExecutor, ExecutionConfig


def _chunk(start: float, horizon: int = 4) -> np.ndarray:
    return (start + np.arange(horizon, dtype=np.float32))[:, None] * np.ones((1, 2), np.float32)


def test_receding_horizon_executes_the_first_k_actions_then_queries():
    ex = ActionExecutor(ExecutionConfig(mode="receding", execute_steps=2))
    queries, actions = [], []
    for t in range(6):
        action, queried = ex.act(lambda t=t: _chunk(100.0 * t))
        queries.append(queried)
        actions.append(action[0])
    assert queries == [True, False, True, False, True, False]
    assert actions == [0, 1, 200, 201, 400, 401]
    ex.reset()
    assert ex.needs_query() and ex.step == 0


def test_temporal_ensemble_weights_older_chunks_exp_minus_m_i():
    m = 0.5
    ex = ActionExecutor(ExecutionConfig(mode="ensemble", execute_steps=1, ensemble_decay=m))
    a0, _ = ex.act(lambda: _chunk(0.0))  # predicts 0, 1, 2, 3 for steps 0..3
    assert a0[0] == 0.0
    a1, _ = ex.act(lambda: _chunk(10.0))  # step 1: old chunk says 1, new says 10
    w = np.exp(-m * np.arange(2))
    assert a1[0] == pytest.approx((w[0] * 1 + w[1] * 10) / w.sum())
    a2, _ = ex.act(lambda: _chunk(20.0))  # step 2: 2 (oldest), 11, 20
    w = np.exp(-m * np.arange(3))
    assert a2[0] == pytest.approx((w @ np.array([2.0, 11.0, 20.0])) / w.sum())


def test_ensemble_with_zero_decay_is_a_plain_mean_and_drops_expired_chunks():
    ex = ActionExecutor(ExecutionConfig(mode="ensemble", ensemble_decay=0.0))
    for t in range(6):
        action, _ = ex.act(lambda t=t: _chunk(float(t), horizon=2))
    # at step 5 the chunks of steps 4 and 5 cover it: 4 + 1 and 5 + 0
    assert action[0] == pytest.approx(5.0)
    assert len(ex._chunks) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"mode": "chunked"}, "mode"), ({"execute_steps": 0}, "execute_steps"), ({"ensemble_decay": -1.0}, "ensemble_decay")],
)
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExecutionConfig(**kwargs)


def test_chunk_errors():
    ex = ActionExecutor(ExecutionConfig(execute_steps=5))
    with pytest.raises(ValueError, match="execute_steps"):
        ex.add_chunk(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        ex.add_chunk(np.full((8, 3), np.nan))
    with pytest.raises(ValueError, match="shape"):
        ex.add_chunk(np.zeros(3))
    with pytest.raises(RuntimeError, match="add_chunk"):
        ex.next_action()
