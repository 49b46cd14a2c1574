"""What a log step reports: throughput, data wait, memory; and a local ``metrics.jsonl`` tracker."""

from __future__ import annotations

import json
import math
import os
import resource
import time
from pathlib import Path

import torch
from accelerate.tracking import GeneralTracker


class JsonlTracker(GeneralTracker):
    """An Accelerate tracker appending one JSON line per logged step; needs no account or network.

    On resume, lines past the resumed step (logged after the last checkpoint, before the crash) and a
    last line cut off by the crash are dropped, so the file reads as one run without duplicate steps.
    """

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, path: Path | None = None, resume_step: int | None = None):
        super().__init__()
        self.path = path
        self.resume_step = resume_step

    @property
    def tracker(self):
        return self

    def start(self) -> None:
        from accelerate.state import PartialState

        if not PartialState().is_main_process or self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            torn = self.resume_step + 1
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line, torn) <= self.resume_step]
            tmp = self.path.with_name(self.path.name + ".tmp")  # a crash while rewriting keeps the old log
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)

    def store_init_configuration(self, values: dict) -> None:  # the resolved config is written separately
        pass

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        record = {"step": step, "time": time.time(), **{k: to_plain(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _step_of(line: str, torn: int) -> int:
    """A record's step; ``torn`` (dropped) for a blank line or one a crash cut off mid-write."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return torn


def to_plain(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def host_rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``), else its peak from ``getrusage``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gpu_memory(device: torch.device) -> dict[str, float]:
    """Peak GPU memory since the last call (then reset), in bytes; empty off-GPU."""
    if device.type != "cuda":
        return {}
    out = {
        "gpu_peak_allocated_bytes": float(torch.cuda.max_memory_allocated(device)),
        "gpu_peak_reserved_bytes": float(torch.cuda.max_memory_reserved(device)),
    }
    torch.cuda.reset_peak_memory_stats(device)
    return out


class IntervalMeter:
    """Sums step and data-wait times over a logging interval; reports means per optimizer step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.samples = 0
        self.step_time = 0.0
        self.data_wait = 0.0
        self.loss_sum = 0.0

    def add(self, step_time: float, data_wait: float, samples: int, loss: float) -> None:
        self.steps += 1
        self.samples += samples
        self.step_time += step_time
        self.data_wait += data_wait
        self.loss_sum += loss

    def summary(self) -> dict[str, float]:
        n = max(self.steps, 1)
        return {
            "loss": self.loss_sum / n,
            "step_time_s": self.step_time / n,
            "data_wait_s": self.data_wait / n,
            "data_wait_fraction": self.data_wait / self.step_time if self.step_time > 0 else 0.0,
            "samples_per_s": self.samples / self.step_time if self.step_time > 0 else 0.0,
        }
