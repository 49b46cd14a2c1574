"""Closed-loop evaluation of a trained run in the insertion simulator: success rate, not offline error.

Episode ``i`` uses env seed ``sim.seed + i``, so runs compared (sensor on and off) meet the same hidden
surfaces and stiffnesses. Under ``accelerate launch`` each rank runs every N-th episode and rank 0
gathers them: each episode counted once. Rank 0 writes ``sim_metrics.json`` and the pictures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vla_sensor.eval.config import SimEvalConfig

log = logging.getLogger(__name__)


@dataclass
class SimResult:
    summary: dict[str, Any]
    output_dir: Path
    files: dict[str, Path]
    is_main_process: bool = True


def episode_seeds(seed: int, episodes: int) -> list[int]:
    if episodes < 1:
        raise ValueError(f"sim.episodes: expected at least one episode, got {episodes}")
    return [int(seed) + i for i in range(episodes)]


def _policy(run_dir: Path, checkpoint: str | None, device: Any, server: str | None) -> Any:
    """The run's policy in this process, or a client of the policy server at ``server`` (ws://host:port)."""
    if server:
        from vla_sensor.serving.client import PolicyClient

        return PolicyClient.from_url(server)
    from vla_sensor.eval.policy import RunPolicy

    return RunPolicy.from_run(run_dir, checkpoint, device=device)


def evaluate_in_sim(run_dir: str | Path, sim: Any, *, checkpoint: str | None = None,
                    output_dir: str | Path | None = None, cpu: bool = False) -> SimResult:
    """Run ``sim.episodes`` closed-loop episodes of the run's policy (``sim``: ``SimEvalConfig`` fields)."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from vla_sensor.execution import ExecutionConfig
    from vla_sensor.sim.record import target_ranges
    from vla_sensor.sim.report import write_sim_report
    from vla_sensor.sim.rollout import run_episodes, summarize

    run_dir = Path(run_dir)
    accelerator = Accelerator(cpu=cpu)
    policy = _policy(run_dir, checkpoint, accelerator.device, sim.policy_server)
    seeds = episode_seeds(int(sim.seed), int(sim.episodes))
    execution = ExecutionConfig(mode=getattr(sim.mode, "value", sim.mode), execute_steps=int(sim.execute_steps),
                                ensemble_decay=float(sim.ensemble_decay))
    env_kwargs = {"views": policy.views, "image_size": int(sim.image_size),
                  "episode_seconds": float(sim.episode_seconds), "ranges": target_ranges(sim.target_range_mm)}
    mine = seeds[accelerator.process_index :: accelerator.num_processes]
    try:
        records = run_episodes(policy, mine, env_kwargs, execution,
                               progress=bool(sim.progress) and accelerator.is_main_process, frames=int(sim.frames))
    finally:
        if hasattr(policy, "close"):  # a server's client: hang up
            policy.close()
    if accelerator.num_processes > 1:
        records = gather_object(records)
    records = sorted(records, key=lambda r: r.seed)
    out = Path(output_dir) if output_dir else run_dir / "eval"
    summary = summarize(records)
    summary["run_dir"] = str(run_dir)
    settings = OmegaConf.merge(OmegaConf.structured(SimEvalConfig), sim)
    summary["settings"] = {**OmegaConf.to_container(settings, resolve=True, enum_to_str=True),
                           "views": policy.views, "processes": accelerator.num_processes}
    files: dict[str, Path] = {}
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        files = write_sim_report(records, out, summary=summary)
    accelerator.wait_for_everyone()
    return SimResult(summary, out, files, accelerator.is_main_process)


def format_sim_table(summary: dict[str, Any]) -> str:
    lo, hi = summary["success_rate_ci95"]
    tts = summary["mean_time_to_success_s"]
    return "\n".join([
        "| episodes | success rate | 95% CI | mean time to success | peak force (max) | force-limit violations |",
        "|---:|---:|---|---:|---:|---:|",
        f"| {summary['episodes']} | {summary['success_rate']:.1%} | {lo:.1%} – {hi:.1%} | "
        f"{'–' if tts is None else f'{tts:.2f} s'} | {summary['peak_force_n']['max']:.2f} N | "
        f"{summary['force_limit_violations']} |",
    ])
