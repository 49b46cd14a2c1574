"""Evaluate a trained run: ``python evaluate.py run_dir=outputs/<date>/<time>``.

Prints L1/MSE tables (overall, per horizon step, per action dimension, with/without sensor) and
writes ``eval_metrics.json`` and PNG plots into ``<run_dir>/eval`` (or ``output_dir``). Given a
multirun directory (``multirun/<date>/<time>``), evaluates every job and prints a comparison.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from vla_sensor.eval.run import evaluate_run
    from vla_sensor.eval.sweep import evaluate_sweep, sweep_job_dirs

    kwargs = dict(val_dirs=list(cfg.data.val_dirs) or None, batch_size=cfg.batch_size,
                  num_workers=cfg.num_workers, num_trace_plots=cfg.num_trace_plots, cpu=cfg.cpu)
    run_dir = Path(cfg.run_dir)
    if not (run_dir / "config.yaml").is_file() and run_dir.is_dir() and sweep_job_dirs(run_dir):
        table, _ = evaluate_sweep(run_dir, **kwargs)  # a multirun directory: every job, compared
        print(table)
        print(f"\nwrote {run_dir / 'sweep_eval.json'} and each job's eval/")
        return
    result = evaluate_run(run_dir, checkpoint=cfg.checkpoint, output_dir=cfg.output_dir, **kwargs)
    if result.is_main_process:
        print(result.table)
        print(f"\nwrote {result.output_dir / 'eval_metrics.json'} and plots")


if __name__ == "__main__":
    main()
