"""Is the sensor cache copied into each DataLoader worker? Asked page by page.

``smaps_rollup`` totals a worker's private and shared memory, but heap churn from building batches
lands in "private" too, so totals cannot say whether the *cache* was copied. ``/proc/<pid>/pagemap``
can: for every page of the cache's address range in the worker it tells whether the page is present,
whether it is mapped by this process only (bit 56, "exclusively mapped") and whether it is a file page
(bit 61). A page of the cache that is present, anonymous and exclusive is a private copy in that worker
(written after the fork, or re-created); a page shared with the parent, or a page-cache page of the
``mmap`` file, is not.

In-memory caches (``windows``, ``stream``) sit at the same virtual addresses in a forked worker as in
the parent; the ``mmap`` cache is mapped again by each worker, so its ranges are read from the
worker's ``/proc/<pid>/maps`` by file name.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

PAGE = mmap.PAGESIZE
_PRESENT = np.uint64(1) << np.uint64(63)
_FILE_OR_SHARED_ANON = np.uint64(1) << np.uint64(61)
_EXCLUSIVE = np.uint64(1) << np.uint64(56)


def pagemap_available(pid: int | None = None) -> bool:
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/pagemap", "rb") as f:
            f.read(8)
        return True
    except OSError:
        return False


def array_ranges(arrays: Iterable[np.ndarray]) -> list[tuple[int, int]]:
    """Virtual address ranges of the arrays' data buffers."""
    out = []
    for a in arrays:
        if a.nbytes:
            start = int(a.__array_interface__["data"][0])
            out.append((start, start + int(a.nbytes)))
    return out


def file_ranges(pid: int, paths: Iterable[Path]) -> list[tuple[int, int]]:
    """Address ranges where ``pid`` maps any of ``paths``."""
    names = {str(Path(p).resolve()) for p in paths}
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].strip() in names:
            lo, hi = parts[0].split("-")
            out.append((int(lo, 16), int(hi, 16)))
    return out


def page_sharing(pid: int, ranges: list[tuple[int, int]]) -> dict[str, int]:
    """Bytes of ``ranges`` in ``pid``: mapped (total), resident, private anonymous copies, shared."""
    pages: set[int] = set()
    for start, end in ranges:
        pages.update(range(start // PAGE, (end - 1) // PAGE + 1))
    if not pages:
        return {"range_bytes": 0, "resident_bytes": 0, "private_copy_bytes": 0, "shared_bytes": 0}
    idx = np.fromiter(sorted(pages), dtype=np.int64)
    entries = np.zeros(idx.shape[0], np.uint64)
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        # read contiguous runs of page entries in one call each
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        for run in np.split(np.arange(idx.shape[0]), breaks):
            f.seek(int(idx[run[0]]) * 8)
            entries[run] = np.frombuffer(f.read(run.shape[0] * 8), dtype=np.uint64)
    present = (entries & _PRESENT) != 0
    anon = (entries & _FILE_OR_SHARED_ANON) == 0
    exclusive = (entries & _EXCLUSIVE) != 0
    private = present & anon & exclusive
    return {
        "range_bytes": int(idx.shape[0]) * PAGE,
        "resident_bytes": int(present.sum()) * PAGE,
        "private_copy_bytes": int(private.sum()) * PAGE,
        "shared_bytes": int((present & ~private).sum()) * PAGE,
    }


def cache_location(ds: Any) -> dict[str, Any] | None:
    """Where a dataset's sensor cache lives: arrays (in memory) or files (mmap); None if nothing is cached."""
    cache = getattr(ds, "cache", None)
    return None if cache is None else cache.storage()


def worker_cache_pages(pid: int, location: dict[str, Any]) -> dict[str, int]:
    if "arrays" in location:
        ranges = array_ranges(location["arrays"])
    else:
        ranges = file_ranges(pid, location["files"])
    return page_sharing(pid, ranges)
