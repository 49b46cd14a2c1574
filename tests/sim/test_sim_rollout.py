"""Closed-loop rollouts: summary and interval math, the report files, the policy's view of the stream."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_sensor.data.observation import validate_observation
from vla_sensor.execution import ExecutionConfig
from vla_sensor.sim.expert import ScriptedExpert
from vla_sensor.sim.report import write_sim_report
from vla_sensor.sim.rollout import EpisodeRecord, run_episodes, summarize
from vla_sensor.sim.stats import wilson_interval


def _record(seed: int, success: bool, peak: float = 1.0, tts: float | None = 2.0) -> EpisodeRecord:
    t = np.linspace(0, 1, 5)
    return EpisodeRecord(
        seed=seed, success=success, steps=10, time_s=1.0, time_to_success_s=tts if success else None,
        peak_force_n=peak, force_limit_exceeded=peak > 4.0, final_depth_error_mm=0.0, final_lateral_error_mm=0.0,
        params={}, queries=10, times_s=t, force_n=t, depth_mm=t,
    )


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)
    assert wilson_interval(45, 50) == pytest.approx((0.78638, 0.95653), abs=1e-4)
    with pytest.raises(ValueError, match="trials"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


def test_summary_counts_rates_times_and_forces():
    records = [_record(1, True, 1.0, 2.0), _record(2, True, 2.0, 3.0), _record(3, False, 5.0), _record(4, False)]
    s = summarize(records, force_limit_n=4.0)
    assert s["episodes"] == 4 and s["successes"] == 2 and s["success_rate"] == 0.5
    assert s["success_rate_ci95"] == pytest.approx(list(wilson_interval(2, 4)))
    assert s["mean_time_to_success_s"] == pytest.approx(2.5)
    assert s["peak_force_n"] == {"max": 5.0, "mean": pytest.approx(2.25)}
    assert s["force_limit_violations"] == 1
    assert s["seeds"] == [1, 2, 3, 4]
    assert [e["seed"] for e in s["per_episode"]] == [1, 2, 3, 4]
    json.dumps(s)
    assert summarize([_record(1, False)])["mean_time_to_success_s"] is None
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


class _Recorder:
    """A policy that checks every observation and remembers the sensor timestamps it was shown."""

    def __init__(self, horizon: int = 4) -> None:
        self.horizon, self.seen = horizon, []

    def reset(self) -> None:
        self.seen = []

    def predict(self, obs):
        validate_observation(obs, views=["left", "oak"], channels=1026)
        self.seen.append(obs["sensor"]["timestamps"])
        return np.tile(np.array([0.0, 0.0, -0.5], np.float32), (self.horizon, 1))


def test_policy_sees_every_sensor_sample_once_with_receding_horizon(gl_ok):
    policy = _Recorder()
    records = run_episodes(policy, [5], env_kwargs={"image_size": 16, "episode_seconds": 2.0, "terminate_on_failure": False},
                           execution=ExecutionConfig(execute_steps=3), progress=False)
    (rec,) = records
    seen = np.concatenate(policy.seen)
    assert rec.queries == len(policy.seen) == 7  # 20 steps, a query every 3
    assert np.allclose(seen, np.arange(seen.shape[0]) / 650)  # contiguous from t = 0, nothing skipped
    assert rec.times_s.shape == rec.force_n.shape == rec.depth_mm.shape == (1301,)
    assert rec.frames and set(rec.frames[0][1]) == {"left", "oak"}


def test_wrong_action_dimension_is_a_clear_error():
    class SevenD:
        def reset(self):
            pass

        def predict(self, obs):
            return np.zeros((8, 7), np.float32)

    with pytest.raises(ValueError, match=r"\(horizon, 3\)"):
        run_episodes(SevenD(), [0], env_kwargs={"views": ()}, progress=False)


def test_expert_rollouts_and_report(gl_ok, tmp_path):
    from vla_sensor.sim.expert import ExpertConfig

    records = run_episodes(lambda env: ScriptedExpert(env), [0, 1], env_kwargs={"image_size": 32},
                           execution=ExecutionConfig(mode="ensemble", ensemble_decay=0.1), progress=False)
    records += run_episodes(lambda env: ScriptedExpert(env, ExpertConfig(use_force=False)), [3],
                            env_kwargs={"image_size": 32}, progress=False)
    assert [r.success for r in records] == [True, True, False]
    assert records[0].time_to_success_s is not None and records[0].time_s < 6.0  # ends at success
    paths = write_sim_report(records, tmp_path / "eval")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["episodes"] == 3 and metrics["successes"] == 2
    assert metrics["criterion"]["target_depth_mm"] == 2.0
    assert not list((tmp_path / "eval").glob(".*tmp*"))  # the atomic write left nothing behind
    from PIL import Image

    for key in ("rollouts", "force_depth"):
        w, h = Image.open(paths[key]).size
        assert w > 300 and h > 200
