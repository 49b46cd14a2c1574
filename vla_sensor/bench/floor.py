"""The physical floor: a plain memory copy of the same number of bytes.

A loading figure alone says little on a shared machine; divided by the time this machine takes to
copy the same bytes from one contiguous buffer to another it reads as "how many memcpys", which is
comparable across machines and runs. Loading faster than the floor means no copy was made (a view).

The copies are timed exactly like the loads (one call per item in a tight loop, garbage collector
paused, see :func:`vla_sensor.bench.timing.measure_each`), from a pool of source buffers cycled so
that a copy is not served from a CPU cache that a real read of a large cache would miss.
"""

from __future__ import annotations

import numpy as np

from vla_sensor.bench.timing import Timing, measure_each


def memcpy_floor(nbytes: int, *, repeats: int, warmup: int = 2, pool_factor: int = 1, fresh: bool = False) -> Timing:
    """Time ``np.copyto`` of ``nbytes`` contiguous bytes.

    The destination is preallocated and already faulted in (the floor proper), or with ``fresh``
    a newly allocated buffer each time, which adds the first-touch page faults a freshly allocated
    batch tensor pays.
    """
    if nbytes <= 0:
        raise ValueError(f"nbytes must be positive, got {nbytes}")
    n = max(nbytes // 4, 1)
    sources = []
    for i in range(max(pool_factor, 1)):
        src = np.empty(n, dtype=np.float32)
        src.fill(float(i))  # faults the pages in; the values do not matter to a copy
        sources.append(src)
    dest = np.empty(n, dtype=np.float32)
    dest.fill(0.0)

    def copy(i: int) -> None:
        out = np.empty(n, dtype=np.float32) if fresh else dest
        np.copyto(out, sources[i % len(sources)])

    return measure_each(copy, range(warmup, warmup + repeats), warmup_items=range(warmup))


def memcpy_bandwidth(timing: Timing, nbytes: int) -> float:
    """Bytes per second of the median copy."""
    return nbytes / timing.median
