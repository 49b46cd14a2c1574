"""The toy task with a fixed delay per sample, so that a signal can land mid-training on any machine.

``trainer.components=tests.slurm.slow_toy.build`` with ``VLA_TOY_SAMPLE_DELAY_S`` (default 0.01 s):
the DataLoader workers sleep while loading, as slow storage would, and the signals the tests send reach
them mid-load. ``VLA_TOY_STOP_AND_DIE_AT=<index>``: the worker loading that sample sends SIGUSR1 to
the trainer and dies. Everything else is :func:`vla_sensor.training.toy.build_toy_components`.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

from torch.utils.data import get_worker_info

from vla_sensor.training.components import Components
from vla_sensor.training.toy import ToyDataset, build_toy_components


class SlowToyDataset(ToyDataset):
    def __getitem__(self, i: int) -> dict:
        time.sleep(float(os.environ.get("VLA_TOY_SAMPLE_DELAY_S", "0.01")))
        if str(i) == os.environ.get("VLA_TOY_STOP_AND_DIE_AT") and get_worker_info() is not None:
            os.kill(os.getppid(), signal.SIGUSR1)  # a stop request, then this worker's death (as a job ends)
            time.sleep(0.05)
            os._exit(1)
        return super().__getitem__(i)


def build(cfg, accelerator) -> Components:
    components = build_toy_components(cfg, accelerator)
    return replace(components, train_dataset=SlowToyDataset(len(components.train_dataset), seed=cfg.seed))
