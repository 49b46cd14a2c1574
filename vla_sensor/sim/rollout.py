"""Closed-loop rollouts of any :class:`~vla_sensor.data.observation.Policy` in :class:`InsertionEnv`.

Independent of the model: a trained run's policy, a policy-server client and the scripted expert
all go through :func:`run_episode`. Chunks become actions through
:class:`vla_sensor.execution.ActionExecutor` (receding horizon or temporal ensembling).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_sensor.data.observation import Observation, Policy
from vla_sensor.execution import ActionExecutor, ExecutionConfig
from vla_sensor.sim.env import ACTION_DIM, InsertionEnv
from vla_sensor.sim.stats import wilson_interval

PolicyOrFactory = Policy | Callable[[InsertionEnv], Policy]


@dataclass
class EpisodeRecord:
    """One closed-loop episode: outcome, hidden parameters, 650 Hz force/depth traces, a few frames."""

    seed: int
    success: bool
    steps: int
    time_s: float
    time_to_success_s: float | None
    peak_force_n: float
    force_limit_exceeded: bool
    final_depth_error_mm: float  # tip depth minus target depth at the end
    final_lateral_error_mm: float
    params: dict[str, float]
    queries: int  # policy calls
    times_s: np.ndarray = field(repr=False)  # (N,) sensor sample times
    force_n: np.ndarray = field(repr=False)  # (N,) the observed (zeroed, noisy) force channel
    depth_mm: np.ndarray = field(repr=False)  # (N,) tip depth below the hidden rest surface
    frames: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list, repr=False)  # (step, images)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able summary (no traces or frames)."""
        return {
            "seed": self.seed,
            "success": self.success,
            "steps": self.steps,
            "time_s": self.time_s,
            "time_to_success_s": self.time_to_success_s,
            "peak_force_n": self.peak_force_n,
            "force_limit_exceeded": self.force_limit_exceeded,
            "final_depth_error_mm": self.final_depth_error_mm,
            "final_lateral_error_mm": self.final_lateral_error_mm,
            "params": dict(self.params),
            "queries": self.queries,
        }


def _frame_steps(max_steps: int, count: int) -> set[int]:
    return {round(x) for x in np.linspace(0, max_steps, max(count, 1))} if count > 0 else set()


def _chunk_checked(chunk: Any) -> np.ndarray:
    c = np.asarray(chunk)
    if c.ndim != 2 or c.shape[1] != ACTION_DIM:
        raise ValueError(
            f"policy: predicted a chunk of shape {c.shape}; the simulator needs (horizon, {ACTION_DIM}) "
            "actions (dx, dy, dz in mm per 0.1 s step) — was the policy trained on simulator recordings?"
        )
    return c


def _since_last_query(obs: Observation, unseen: list[dict[str, np.ndarray]]) -> Observation:
    """``obs`` with the sensor samples of every step since the policy's previous query.

    The contract's sensor chunk holds the samples since the previous observation *the policy saw*;
    with ``execute_steps > 1`` the steps in between are not shown to it, so their samples join here.
    """
    if len(unseen) == 1:
        return obs
    sensor = {
        "timestamps": np.concatenate([c["timestamps"] for c in unseen]),
        "values": np.concatenate([c["values"] for c in unseen]),
    }
    return {**obs, "sensor": sensor}  # type: ignore[typeddict-item]  (images, instruction, state kept)


def run_episode(
    env: InsertionEnv,
    policy: Policy,
    seed: int,
    execution: ExecutionConfig | None = None,
    frames: int = 6,
) -> EpisodeRecord:
    """Run one episode from ``env.reset(seed=seed)`` until success, failure or timeout.

    ``frames`` images per view are kept, evenly spaced over the episode's time limit, plus the last.
    """
    obs, info = env.reset(seed=int(seed))
    policy.reset()
    executor = ActionExecutor(execution or ExecutionConfig())
    keep = _frame_steps(env.max_steps, frames)
    times, forces, depths = [obs["sensor"]["timestamps"]], [obs["sensor"]["values"][:, 0]], [info["sample_depth_mm"]]
    kept: list[tuple[int, dict[str, np.ndarray]]] = [(0, obs["images"])] if 0 in keep else []
    queries, done = 0, False
    current: Observation = obs
    unseen = [obs["sensor"]]
    while not done:
        queried = executor.needs_query()
        if queried:
            executor.add_chunk(_chunk_checked(policy.predict(_since_last_query(current, unseen))))
            queries += 1
            unseen = []
        action = executor.next_action()
        current, _, terminated, truncated, info = env.step(action)
        unseen.append(current["sensor"])
        done = terminated or truncated
        times.append(current["sensor"]["timestamps"])
        forces.append(current["sensor"]["values"][:, 0])
        depths.append(info["sample_depth_mm"])
        if info["step"] in keep or (done and current["images"]):
            kept.append((info["step"], current["images"]))
    crit = env.criterion
    return EpisodeRecord(
        seed=int(seed),
        success=bool(info["success"]),
        steps=int(info["step"]),
        time_s=float(info["time_s"]),
        time_to_success_s=info["time_to_success_s"],
        peak_force_n=float(info["peak_force_n"]),
        force_limit_exceeded=bool(info["force_limit_exceeded"]),
        final_depth_error_mm=float(info["tip_depth_mm"] - crit.target_depth_mm),
        final_lateral_error_mm=float(info["lateral_error_mm"]),
        params=dict(info["params"]),
        queries=queries,
        times_s=np.concatenate(times),
        force_n=np.concatenate(forces).astype(np.float32),
        depth_mm=np.concatenate(depths).astype(np.float32),
        frames=[(s, imgs) for s, imgs in kept if imgs],
    )


def run_episodes(
    policy: PolicyOrFactory,
    seeds: Iterable[int],
    env_kwargs: Mapping[str, Any] | None = None,
    execution: ExecutionConfig | None = None,
    progress: bool = True,
    frames: int = 6,
) -> list[EpisodeRecord]:
    """One episode per seed in one environment (closed at the end).

    ``policy`` is a :class:`Policy`, or a callable ``env -> Policy`` for policies that need the
    environment (the scripted expert: ``lambda env: ScriptedExpert(env)``).
    """
    seeds = [int(s) for s in seeds]
    env = InsertionEnv(**dict(env_kwargs or {}))
    try:
        is_instance = isinstance(policy, Policy) and not isinstance(policy, type)
        pol: Policy = policy if is_instance else policy(env)  # type: ignore[operator, assignment]
        records: list[EpisodeRecord] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(seeds), desc="sim episodes", unit="ep")
        for seed in seeds:
            records.append(run_episode(env, pol, seed, execution, frames))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([r.success for r in records]):.0%}")
        if bar is not None:
            bar.close()
        return records
    finally:
        env.close()


def summarize(records: list[EpisodeRecord], force_limit_n: float | None = None) -> dict[str, Any]:
    """Success rate with its 95% Wilson interval, timing, forces and the per-episode records."""
    if not records:
        raise ValueError("records: expected at least one episode to summarize")
    n = len(records)
    k = sum(r.success for r in records)
    lo, hi = wilson_interval(k, n)
    tts = [r.time_to_success_s for r in records if r.success and r.time_to_success_s is not None]
    peaks = np.array([r.peak_force_n for r in records])
    if force_limit_n is None:
        from vla_sensor.sim.scene import SuccessCriterion

        force_limit_n = SuccessCriterion().force_limit_n
    return {
        "episodes": n,
        "successes": int(k),
        "success_rate": k / n,
        "success_rate_ci95": [lo, hi],
        "ci_method": "wilson",
        "mean_time_to_success_s": float(np.mean(tts)) if tts else None,
        "peak_force_n": {"max": float(peaks.max()), "mean": float(peaks.mean())},
        "force_limit_n": float(force_limit_n),
        "force_limit_violations": int(sum(r.force_limit_exceeded for r in records)),
        "seeds": [r.seed for r in records],
        "per_episode": [r.to_dict() for r in records],
    }
