"""Process memory (from /proc) and autograd activation memory.

Two questions the report answers with these helpers:

* does a DataLoader worker hold a *private* copy of the sensor cache, or does it share the parent's
  pages (fork copy-on-write, or one page-cache copy of a memory-mapped file)? ``smaps_rollup`` splits
  the resident set into private and shared pages, which plain RSS does not;
* how many bytes does a training step keep alive for backward? On CPU there is no allocator peak to
  read, so the tensors autograd saves are counted through ``saved_tensors_hooks``, once per
  underlying storage so that views of one buffer are not counted twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

KIB = 1024


@dataclass
class ProcessMemory:
    """One process's resident memory in bytes, split as the kernel accounts it."""

    pid: int
    rss: int
    pss: int
    private: int
    shared: int
    private_clean: int = 0
    private_dirty: int = 0
    anonymous: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def smaps_available() -> bool:
    return Path(f"/proc/{os.getpid()}/smaps_rollup").exists()


def read_smaps_rollup(pid: int | None = None) -> ProcessMemory:
    """Parse ``/proc/<pid>/smaps_rollup`` (Linux ≥ 4.14).

    private = Private_Clean + Private_Dirty, shared = Shared_Clean + Shared_Dirty, Pss = the
    process's proportional share of its shared pages.
    """
    pid = os.getpid() if pid is None else pid
    path = Path(f"/proc/{pid}/smaps_rollup")
    fields: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
            fields[parts[0][:-1]] = int(parts[1]) * KIB
    return ProcessMemory(
        pid=pid,
        rss=fields.get("Rss", 0),
        pss=fields.get("Pss", 0),
        private=fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
        shared=fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0),
        private_clean=fields.get("Private_Clean", 0),
        private_dirty=fields.get("Private_Dirty", 0),
        anonymous=fields.get("Anonymous", 0),
    )


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so that the next resident-set
    delta measures the new allocation rather than reused free memory. No-op elsewhere."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    with suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


def child_pids(pid: int | None = None) -> list[int]:
    """Direct children of ``pid`` (the DataLoader workers of the main process)."""
    pid = os.getpid() if pid is None else pid
    children: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.iterdir() if task_dir.exists() else []:
        children_file = task / "children"
        if children_file.exists():
            children.extend(int(p) for p in children_file.read_text().split())
    return sorted(set(children))


def _storage_key(t: torch.Tensor) -> tuple[Any, ...]:
    try:
        storage = t.untyped_storage()
        return ("storage", storage.data_ptr(), storage.nbytes(), t.device.type)
    except (RuntimeError, NotImplementedError):  # sparse, meta or otherwise storage-less tensors
        return ("tensor", id(t), t.numel() * t.element_size(), t.device.type)


@dataclass
class SavedTensors:
    """Bytes autograd saves for backward, each storage counted once."""

    nbytes: int = 0
    count: int = 0

    def __post_init__(self) -> None:
        self._seen: set[tuple[Any, ...]] = set()

    def add(self, t: torch.Tensor) -> None:
        key = _storage_key(t)
        if key in self._seen:
            return
        self._seen.add(key)
        self.count += 1
        self.nbytes += key[2]


@contextmanager
def count_saved_tensors(exclude: Callable[[torch.Tensor], bool] | None = None) -> Iterator[SavedTensors]:
    """Count unique storages saved for backward inside the block.

    Parameters are saved by many ops (a linear layer saves its weight) but are not activation
    memory: pass ``exclude`` (e.g. membership in the model's parameter storages) to leave them out.
    """
    acc = SavedTensors()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if exclude is None or not exclude(t):
            acc.add(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield acc


def parameter_storage_filter(
    module: torch.nn.Module, extra: tuple[torch.Tensor, ...] = ()
) -> Callable[[torch.Tensor], bool]:
    """A predicate true for tensors sharing storage with ``module``'s parameters or ``extra``."""
    ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    ptrs |= {t.untyped_storage().data_ptr() for t in extra}

    def is_param(t: torch.Tensor) -> bool:
        try:
            return t.untyped_storage().data_ptr() in ptrs
        except (RuntimeError, NotImplementedError):
            return False

    return is_param


def cuda_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated on ``device`` during ``fn()``, above what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)
