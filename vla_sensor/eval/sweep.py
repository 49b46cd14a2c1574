"""Evaluate every job of a Hydra multirun sweep and compare them side by side (e.g. the sensor ablation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vla_sensor.eval.report import write_json_atomic
from vla_sensor.eval.run import EvalResult, evaluate_run


def sweep_job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (sub-directories holding a run's ``config.yaml``), in job order."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / "config.yaml").is_file()]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def job_overrides(job_dir: Path) -> list[str]:
    """The command-line overrides Hydra recorded for this job (what differs between sweep jobs)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def evaluate_sweep(sweep_dir: str | Path, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """Evaluate each job; a markdown comparison table and ``sweep_eval.json`` in the sweep directory."""
    sweep_dir = Path(sweep_dir)
    jobs = sweep_job_dirs(sweep_dir)
    results: dict[str, EvalResult] = {}
    overrides: dict[str, list[str]] = {}
    for job in jobs:
        results[job.name] = evaluate_run(job, **kwargs)
        overrides[job.name] = job_overrides(job)
    shared = set.intersection(*(set(o) for o in overrides.values())) if overrides else set()

    def cell(group: dict[str, Any], key: str) -> str:
        return f"{group[key]:.4f}" if group.get("num_action_steps") else "–"

    lines = [
        "| job | overrides | L1 | MSE | L1 (with sensor) | L1 (without sensor) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        m = res.metrics
        diff = " ".join(o for o in overrides[name] if o not in shared) or "–"
        lines.append(
            f"| {name} | {diff} | {cell(m['all'], 'l1')} | {cell(m['all'], 'mse')} | "
            f"{cell(m['with_sensor'], 'l1')} | {cell(m['without_sensor'], 'l1')} |"
        )
    table = "\n".join(lines)
    payload = {name: {"overrides": overrides[name], "metrics": res.metrics} for name, res in results.items()}
    write_json_atomic(sweep_dir / "sweep_eval.json", payload)
    return table, payload
