"""Evaluate a trained run: ``python evaluate.py run_dir=outputs/<date>/<time>``.

Prints L1/MSE tables (overall, per horizon step, per action dimension, with/without sensor) and
writes ``eval_metrics.json`` and PNG plots into ``<run_dir>/eval`` (or ``output_dir``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from vla_sensor.eval.run import evaluate_run

    result = evaluate_run(
        cfg.run_dir,
        checkpoint=cfg.checkpoint,
        val_dirs=list(cfg.data.val_dirs) or None,
        output_dir=cfg.output_dir,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        num_trace_plots=cfg.num_trace_plots,
        cpu=cfg.cpu,
    )
    print(result.table)
    print(f"\nwrote {result.output_dir / 'eval_metrics.json'} and plots")


if __name__ == "__main__":
    main()
