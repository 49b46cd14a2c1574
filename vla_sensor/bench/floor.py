"""The physical floor: a plain memory copy of the same number of bytes.

A loading figure alone says little on a shared machine; divided by the time this machine takes to
copy the same bytes from one contiguous buffer to another it reads as "how many memcpys", which is
comparable across machines and runs. Loading faster than the floor means no copy was made (a view).
"""

from __future__ import annotations

import numpy as np

from vla_sensor.bench.timing import Timing, measure


def memcpy_floor(nbytes: int, *, repeats: int, warmup: int = 2, pool_factor: int = 1) -> Timing:
    """Time ``np.copyto`` of ``nbytes`` contiguous bytes into a preallocated destination.

    With ``pool_factor > 1`` the source is taken in turn from ``pool_factor`` different buffers so
    that a small copy is not served from a cache that a real dataset read would miss.
    """
    if nbytes <= 0:
        raise ValueError(f"nbytes must be positive, got {nbytes}")
    n = max(nbytes // 4, 1)
    sources = [np.random.default_rng(i).standard_normal(n, dtype=np.float32) for i in range(pool_factor)]
    dest = np.empty(n, dtype=np.float32)
    dest.fill(0.0)  # fault the destination's pages in before timing
    state = {"i": 0}

    def copy() -> None:
        src = sources[state["i"] % len(sources)]
        state["i"] += 1
        np.copyto(dest, src)

    return measure(copy, repeats=repeats, warmup=warmup)


def memcpy_bandwidth(timing: Timing, nbytes: int) -> float:
    """Bytes per second of the median copy."""
    return nbytes / timing.median
