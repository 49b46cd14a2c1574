"""The toy task with a fixed delay per sample, so that a signal can land mid-training on any machine.

``trainer.components=tests.slurm.slow_toy.build`` with ``VLA_TOY_SAMPLE_DELAY_S`` (default 0.01 s):
the DataLoader workers sleep while loading, as slow storage would, and the signals the tests send reach
them mid-load. Everything else is :func:`vla_sensor.training.toy.build_toy_components`.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from vla_sensor.training.components import Components
from vla_sensor.training.toy import ToyDataset, build_toy_components


class SlowToyDataset(ToyDataset):
    def __getitem__(self, i: int) -> dict:
        time.sleep(float(os.environ.get("VLA_TOY_SAMPLE_DELAY_S", "0.01")))
        return super().__getitem__(i)


def build(cfg, accelerator) -> Components:
    components = build_toy_components(cfg, accelerator)
    return replace(components, train_dataset=SlowToyDataset(len(components.train_dataset), seed=cfg.seed))
