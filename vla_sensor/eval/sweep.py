"""Evaluate one run or every job of a Hydra multirun sweep, offline or in closed loop, side by side.

The sensor ablations (``experiment=sensor_ablation``, ``experiment=sim_sensor_ablation``) end here:
one table, one row per job, labelled by what differs between the jobs' overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vla_sensor.data.writer import write_json_atomic


def sweep_job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (sub-directories holding a run's ``config.yaml``), in job order."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / "config.yaml").is_file()]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def job_overrides(job_dir: Path) -> list[str]:
    """The command-line overrides Hydra recorded for this job (what differs between sweep jobs)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def evaluate_job(run_dir: Path, cfg: Any, output_dir: str | Path | None = None) -> tuple[str, Path, bool]:
    """Evaluate one run as ``cfg`` (the ``evaluate`` config) says: (table, file written, is rank 0)."""
    if cfg.sim.episodes > 0:
        from vla_sensor.eval.closed_loop import evaluate_in_sim, format_sim_table

        sim = evaluate_in_sim(run_dir, cfg.sim, checkpoint=cfg.checkpoint, output_dir=output_dir, cpu=cfg.cpu)
        return format_sim_table(sim.summary), sim.output_dir / "sim_metrics.json", sim.is_main_process
    from vla_sensor.eval.run import evaluate_run

    result = evaluate_run(run_dir, checkpoint=cfg.checkpoint, val_dirs=list(cfg.data.val_dirs) or None,
                          output_dir=output_dir, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                          num_trace_plots=cfg.num_trace_plots, cpu=cfg.cpu)
    return result.table, result.output_dir / "eval_metrics.json", result.is_main_process


def _cells(payload: dict[str, Any]) -> tuple[str, ...]:
    if "success_rate" in payload:  # closed loop
        lo, hi = payload["success_rate_ci95"]
        return f"{payload['success_rate']:.1%}", f"{lo:.1%} – {hi:.1%}", str(payload["force_limit_violations"])

    def cell(group: dict[str, Any], key: str) -> str:
        return f"{group[key]:.4f}" if group.get("num_action_steps") else "–"

    m = payload["metrics"]
    return (cell(m["all"], "l1"), cell(m["all"], "mse"), cell(m["with_sensor"], "l1"), cell(m["without_sensor"], "l1"))


def evaluate_sweep(sweep_dir: str | Path, cfg: Any) -> tuple[str, dict[str, Any], bool]:
    """Evaluate each job into its own ``eval/``; a markdown comparison and ``sweep_eval.json``."""
    import json

    sweep_dir = Path(sweep_dir)
    if cfg.sim.episodes > 0 and cfg.sim.get("policy_server"):
        raise ValueError(
            f"sim.policy_server={cfg.sim.policy_server}: one server serves one run, but {sweep_dir} holds a sweep "
            "of several; evaluate the jobs in process (drop sim.policy_server) or one job at a time"
        )
    payload: dict[str, Any] = {}
    is_main = True
    for job in sweep_job_dirs(sweep_dir):
        _, written, is_main = evaluate_job(job, cfg)
        if is_main:
            payload[job.name] = {"overrides": job_overrides(job), **json.loads(written.read_text())}
    if not is_main:
        return "", {}, False
    shared = set.intersection(*(set(p["overrides"]) for p in payload.values())) if payload else set()
    closed_loop = cfg.sim.episodes > 0
    header = ("| job | overrides | success rate | 95% CI | force-limit violations |" if closed_loop else
              "| job | overrides | L1 | MSE | L1 (with sensor) | L1 (without sensor) |")
    lines = [header, "|---|---|" + "---:|" * (header.count("|") - 3)]
    for name, p in payload.items():
        diff = " ".join(o for o in p["overrides"] if o not in shared) or "–"
        lines.append(f"| {name} | {diff} | " + " | ".join(_cells(p)) + " |")
    write_json_atomic(sweep_dir / "sweep_eval.json", payload)
    return "\n".join(lines), payload, True
