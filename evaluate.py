"""Evaluate a trained run: ``python evaluate.py run_dir=outputs/<date>/<time>``.

Offline (default): L1/MSE tables (overall, per horizon step, per action dimension, with/without
sensor), ``eval_metrics.json`` and PNG plots in ``<run_dir>/eval`` (or ``output_dir``).
Closed loop (``sim.episodes=N``): N episodes in the MuJoCo insertion simulator; success rate with its
95% interval, ``sim_metrics.json`` and pictures. Given a multirun directory
(``multirun/<date>/<time>``), evaluates every job and prints a comparison.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import vla_sensor.eval.config
import vla_sensor.hydra_dirs  # noqa: F401  (the run_log_dir resolver of evaluate.yaml)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from vla_sensor.eval.sweep import evaluate_job, evaluate_sweep, sweep_job_dirs

    run_dir = Path(cfg.run_dir)
    if not (run_dir / "config.yaml").is_file() and run_dir.is_dir() and sweep_job_dirs(run_dir):
        table, _, is_main = evaluate_sweep(run_dir, cfg)  # a multirun directory: every job, compared
        if is_main:
            print(table)
            print(f"\nwrote {run_dir / 'sweep_eval.json'} and each job's eval/")
        return
    table, written, is_main = evaluate_job(run_dir, cfg, output_dir=cfg.output_dir)
    if is_main:
        print(table)
        print(f"\nwrote {written}")


if __name__ == "__main__":
    main()
