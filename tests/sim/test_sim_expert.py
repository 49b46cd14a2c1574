"""The force-guided expert succeeds; the same controller without force mostly does not."""

from __future__ import annotations

import numpy as np
import pytest

from vla_sensor.data.observation import Policy
from vla_sensor.sim.expert import ExpertConfig, ScriptedExpert
from vla_sensor.sim.rollout import run_episodes, summarize

EPISODES = 20


@pytest.mark.parametrize("use_force", [True, False])
def test_expert_success_rate(use_force):
    records = run_episodes(
        lambda env: ScriptedExpert(env, ExpertConfig(use_force=use_force)), range(100, 100 + EPISODES),
        env_kwargs={"views": ()}, progress=False, frames=0,
    )
    rate = summarize(records)["success_rate"]
    if use_force:
        assert rate >= 0.9
    else:
        assert rate <= 0.4


def test_expert_is_a_policy_predicting_chunks():
    from vla_sensor.sim.env import InsertionEnv

    env = InsertionEnv(views=())
    expert = ScriptedExpert(env, ExpertConfig(horizon=5))
    assert isinstance(expert, Policy)
    obs, _ = env.reset(seed=0)
    chunk = expert.predict(obs)
    assert chunk.shape == (5, 3) and chunk.dtype == np.float32
    assert (chunk[:, 2] < 0).all()  # above the tissue: descend
    with pytest.raises(ValueError, match="horizon"):
        ScriptedExpert(env, ExpertConfig(horizon=0))
    env.close()
