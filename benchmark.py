"""Entry point: measure data loading, caches and the sensor encoder; write tables, JSON and a chart.

    python benchmark.py                 # full size
    python benchmark.py --quick         # CI size (same as ``benchmark=quick``)

See docs/benchmark.md for what each row measures.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from vla_sensor.bench.config import register_configs

register_configs()


def rewrite_quick_flag(argv: list[str]) -> list[str]:
    """Turn ``--quick`` into the Hydra override ``benchmark=quick`` (Hydra rejects unknown flags)."""
    return [("benchmark=quick" if arg == "--quick" else arg) for arg in argv]


@hydra.main(version_base=None, config_path="conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    from vla_sensor.bench.runner import run_from_hydra

    run_from_hydra(cfg)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *rewrite_quick_flag(sys.argv[1:])]
    main()
