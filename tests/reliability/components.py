"""Toy training components whose DataLoader workers fail on purpose (for test_worker_failures)."""

from __future__ import annotations

import os
import signal

from vla_sensor.training.toy import ToyDataset, build_toy_components

FAIL_AT = 21  # the sample whose loading fails


class FailingToyDataset(ToyDataset):
    """The toy task, except that loading sample ``FAIL_AT`` raises, or kills its worker outright."""

    def __getitem__(self, i: int) -> dict:
        if i == FAIL_AT and os.environ.get("VLA_TEST_WORKER_FAULT") == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if i == FAIL_AT and os.environ.get("VLA_TEST_WORKER_FAULT") == "raise":
            raise OSError(f"sample {i}: cannot read /recordings/toy_{i}.npz")
        return super().__getitem__(i)


def build_failing_components(cfg, accelerator):
    components = build_toy_components(cfg, accelerator)
    components.train_dataset = FailingToyDataset(len(components.train_dataset), seed=cfg.seed)
    return components
