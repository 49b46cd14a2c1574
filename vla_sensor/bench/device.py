"""A human-readable label of the machine a figure was measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_label() -> str:
    """CPU model name from /proc/cpuinfo and the number of cores this process may use."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return f"CPU: {name}, {cores} cores"


def gpu_label(index: int = 0) -> str | None:
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    return f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB"


def device_info() -> dict[str, str | int | None]:
    """Everything the report labels its tables with."""
    return {
        "cpu": cpu_label(),
        "gpu": gpu_label(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
