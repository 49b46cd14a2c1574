"""Simulator speed: recording episodes per minute and where the time goes (physics, OCT model, render).

Records 6-second scripted-expert episodes with two 64x64 views exactly as
``python -m vla_sensor.sim.record`` does (files written to a temporary directory), then times closed-
loop rollouts of the same expert without writing. The target is ten recorded episodes per minute.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from vla_sensor.bench import fmt

TARGET_EPISODES_PER_MINUTE = 10.0
EPISODE_SECONDS = 6.0


def measure_sim(quick: bool) -> dict[str, Any]:
    """Recording and rollout speed; ``quick`` records 3 episodes instead of 12."""
    from vla_sensor.sim.expert import ScriptedExpert
    from vla_sensor.sim.record import record_into, recording_env
    from vla_sensor.sim.rollout import run_episodes

    episodes = 3 if quick else 12
    env = recording_env(("left", "oak"), 64, EPISODE_SECONDS)
    try:
        env.reset(seed=0)  # compile and warm the renderer outside the timed region
        env.timer.reset()
        with tempfile.TemporaryDirectory(prefix="vla_sim_bench_") as tmp:
            t0 = time.perf_counter()
            metas = record_into(env, tmp, episodes, seed=0, progress=False)
            total = time.perf_counter() - t0
            disk = sum(f.stat().st_size for f in os.scandir(os.path.join(tmp, "episode_000000")) if f.is_file())
        stages = dict(env.timer.seconds)
    finally:
        env.close()
    t0 = time.perf_counter()
    rollouts = run_episodes(lambda e: ScriptedExpert(e), range(episodes), progress=False)
    rollout_s = time.perf_counter() - t0
    share = {k: stages.get(k, 0.0) / total for k in ("physics", "sensor", "render")}
    share["expert_and_writing"] = max(0.0, 1.0 - sum(share.values()))
    simulated = episodes * EPISODE_SECONDS
    return {
        "episodes": episodes,
        "episode_seconds": EPISODE_SECONDS,
        "views": ["left", "oak"],
        "image_size": 64,
        "record_seconds": total,
        "episodes_per_minute": 60.0 * episodes / total,
        "target_episodes_per_minute": TARGET_EPISODES_PER_MINUTE,
        "meets_target": 60.0 * episodes / total >= TARGET_EPISODES_PER_MINUTE,
        "share": share,
        "physics_realtime_factor": simulated / stages["physics"] if stages.get("physics") else None,
        "render_ms_per_frame": 1e3 * stages.get("render", 0.0) / (episodes * (env.max_steps + 1) * 2),
        "expert_success_rate": sum(m["success"] for m in metas) / episodes,
        "rollout_episodes_per_minute": 60.0 * len(rollouts) / rollout_s,
        "episode_bytes_without_images": disk,
    }


def measure_policy_rollouts(quick: bool) -> dict[str, Any]:
    """Closed-loop episodes per minute of the tiny model (random weights, CPU) through the run policy's
    full path: live windowing, image resize, Qwen-VL pre-processing, forward pass, receding horizon."""
    from omegaconf import OmegaConf

    from vla_sensor.data.config import DataConfig
    from vla_sensor.eval.policy import RunPolicy
    from vla_sensor.execution import ExecutionConfig
    from vla_sensor.models.vla import build_model
    from vla_sensor.sim.rollout import run_episodes

    episodes = 2 if quick else 10
    model = build_model({"sensor_hidden_dim": 64, "sensor_output_dim": 128}, action_dim=3, horizon=8,
                        view_selection=["left", "oak"], image_size=(56, 56))
    policy = RunPolicy(model, OmegaConf.structured(DataConfig))
    t0 = time.perf_counter()
    records = run_episodes(policy, range(episodes), {"episode_seconds": EPISODE_SECONDS},
                           ExecutionConfig(execute_steps=4), progress=False, frames=0)
    seconds = time.perf_counter() - t0
    queries = sum(r.queries for r in records)
    return {"episodes": episodes, "seconds": seconds, "episodes_per_minute": 60.0 * episodes / seconds,
            "queries": queries, "ms_per_step": 1e3 * seconds / sum(r.steps for r in records),
            "minutes_for_50": 50 * seconds / episodes / 60.0}


def format_sim_section(result: dict[str, Any]) -> str:
    """The benchmark report's simulator section (markdown)."""
    s = result["share"]
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    rtf = result.get("physics_realtime_factor")
    rows = [
        ("recording (6 s episodes, 2 views 64x64, files written)",
         f"{result['episodes_per_minute']:.0f} episodes/min "
         f"({'meets' if result['meets_target'] else 'misses'} ≥ {result['target_episodes_per_minute']:.0f})"),
        ("time share: physics / OCT model / render / expert + writing",
         f"{pct(s['physics'])} / {pct(s['sensor'])} / {pct(s['render'])} / {pct(s['expert_and_writing'])}"),
        ("physics speed (650 Hz)", f"{rtf:.0f}× real time" if rtf else fmt.NA),
        ("render, per frame", f"{result['render_ms_per_frame']:.1f} ms"),
        ("closed-loop rollouts (scripted expert, end at success, no files)", f"{result['rollout_episodes_per_minute']:.0f} episodes/min"),
        ("episode on disk", fmt.nbytes(result["episode_bytes_without_images"]) + " + images"),
        ("expert success in this run", f"{100 * result['expert_success_rate']:.0f}% of {result['episodes']}"),
    ]
    policy = result.get("policy")
    if policy:
        rows.append(("closed-loop evaluation, tiny model (CPU, 4 actions per query)",
                     f"{policy['episodes_per_minute']:.1f} episodes/min, {policy['ms_per_step']:.0f} ms per "
                     f"control step: 50 episodes in {policy['minutes_for_50']:.1f} min"))
    lines = ["### Simulator", "", "| measure | value |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines) + "\n"
