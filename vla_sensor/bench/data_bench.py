"""Data loading measurements: init, per-sample windows, batches, epochs, process memory, quantization.

Every strategy runs on the same generated recordings, the same sample indices and the same loader
settings, one after the other in one process, so each ratio compares like with like. Per-sample
windows are timed twice: as the dataset returns them (a view for float32 ``stream``/``mmap``, no
bytes moved) and materialized (copied into a batch-sized buffer, as collation does), which is the
figure comparable with the memcpy floor.
"""

from __future__ import annotations

import gc
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_sensor.bench.config import DataBenchConfig
from vla_sensor.bench.memory import (
    ProcessMemory,
    child_pids,
    read_smaps_rollup,
    release_freed_memory,
    smaps_available,
)
from vla_sensor.bench.pages import cache_location, pagemap_available, worker_cache_pages
from vla_sensor.bench.timing import Timing, measure_each, time_once

log = logging.getLogger(__name__)

CHANNELS = 1026


def generate(cfg: DataBenchConfig, out_dir: Path) -> tuple[list[Path], float]:
    """Write the recordings; returns their directories and the seconds it took."""
    from vla_sensor.data.synthetic import generate_dataset

    seconds, paths = time_once(
        lambda: generate_dataset(
            out_dir,
            trajectories=cfg.trajectories,
            seconds=cfg.seconds,
            sensor_rate=cfg.sensor_rate,
            action_rate=cfg.action_rate,
            image_size=cfg.image_size,
            views=tuple(cfg.views),
            seed=cfg.seed,
        )
    )
    return [Path(p) for p in paths], seconds


class DataBench:
    """Holds the recordings and the settings every strategy is measured with."""

    def __init__(self, cfg: DataBenchConfig, paths: list[Path], work_dir: Path) -> None:
        self.cfg = cfg
        self.paths = paths
        self.work_dir = work_dir
        self._cache_dirs = 0
        self.last_cache_dir: Path | None = None

    # ----------------------------------------------------------------- datasets
    def fresh_cache_dir(self) -> Path:
        self._cache_dirs += 1
        path = self.work_dir / f"mmap_cache_{self._cache_dirs:03d}"
        shutil.rmtree(path, ignore_errors=True)
        self.last_cache_dir = path
        return path

    def build(self, strategy: str, dtype: str = "float32", cache_dir: Path | None = None) -> Any:
        from vla_sensor.data.config import strategy_settings
        from vla_sensor.data.dataset import InsertionDataset

        return InsertionDataset(
            [str(p) for p in self.paths],
            horizon=self.cfg.horizon,
            sensor_window_size=self.cfg.window,
            view_selection=list(self.cfg.views),
            **strategy_settings(strategy),
            cache_dtype=dtype,
            # the decoded-image cache (on with any sensor cache) lives in the work dir for every strategy
            cache_dir=str(cache_dir if cache_dir is not None else self.work_dir / "cache"),
            image_size=(self.cfg.image_size, self.cfg.image_size),
            progress=False,
        )

    def describe(self, ds: Any) -> dict[str, Any]:
        return {
            "trajectories": len(self.paths),
            "seconds": self.cfg.seconds,
            "sensor_rate": self.cfg.sensor_rate,
            "action_rate": self.cfg.action_rate,
            "channels": int(ds.num_channels),
            "samples": len(ds),
            "window": self.cfg.window,
            "window_nbytes": self.cfg.window * int(ds.num_channels) * 4,
            "raw_sensor_nbytes": int(ds.raw_sensor_nbytes),
            "image_size": self.cfg.image_size,
            "views": list(self.cfg.views),
            "horizon": self.cfg.horizon,
            "image_cache_nbytes": int(getattr(ds, "image_cache_nbytes", 0)),
        }

    # --------------------------------------------------------------------- init
    def time_init(self, strategy: str) -> tuple[dict[str, Timing], Any]:
        """Init timings; returns the last dataset built (warm for ``mmap``).

        The previous dataset is dropped and garbage-collected before the clock starts, so freeing
        one dataset is never timed as part of building the next.
        """
        repeats = max(self.cfg.init_repeats, 1)
        holder: dict[str, Any] = {}

        def timed_build(cache_dir: Path | None = None) -> float:
            holder.pop("ds", None)
            gc.collect()
            seconds, holder["ds"] = time_once(lambda: self.build(strategy, cache_dir=cache_dir))
            return seconds

        if strategy != "mmap":
            samples = [timed_build() for _ in range(repeats)]
            return {strategy: Timing.from_samples(samples)}, holder.pop("ds")
        cold = []
        cache_dir = self.work_dir
        for _ in range(repeats):
            cache_dir = self.fresh_cache_dir()
            cold.append(timed_build(cache_dir))
        warm = [timed_build(cache_dir) for _ in range(repeats)]
        if holder["ds"].cache.built_here:
            log.warning("mmap: the warm init rebuilt its cache; the warm figure is not a reopen")
        return {"mmap_cold": Timing.from_samples(cold), "mmap_warm": Timing.from_samples(warm)}, holder.pop("ds")

    # ------------------------------------------------------------ verification
    def verification_cost(self, cache_dir: Path) -> dict[str, Any]:
        """What checking the cache's blocks costs: warm start with ``verify_full`` (every block at open)
        against the default (first and last block at open), and the per-sample window the first time its
        blocks are served in a process (CRC checked) against once they were (a bitmap lookup)."""
        from vla_sensor.data.config import strategy_settings
        from vla_sensor.data.dataset import InsertionDataset

        def build(verify_full: bool) -> Any:
            return InsertionDataset([str(p) for p in self.paths], horizon=self.cfg.horizon,
                                    sensor_window_size=self.cfg.window, view_selection=list(self.cfg.views),
                                    **strategy_settings("mmap"), cache_dir=str(cache_dir), verify_full=verify_full,
                                    image_size=(self.cfg.image_size, self.cfg.image_size), progress=False)

        repeats = max(self.cfg.init_repeats, 1)
        out: dict[str, Any] = {}
        for name, full in (("warm_init", False), ("warm_init_verify_full", True)):
            out[name] = Timing.from_samples([time_once(lambda full=full: build(full))[0] for _ in range(repeats)]).to_dict()
        ds = build(False)  # nothing verified yet in this process
        touch = self.sample_order(len(ds), len(ds), salt=6)
        buf = np.zeros((self.cfg.window, int(ds.num_channels)), np.float32)

        def materialized(i: int) -> None:
            window, _ = ds.sensor_window(i)
            np.copyto(buf[buf.shape[0] - window.shape[0] :], window)

        blocks = sum(len(f.verified) for f in ds.cache._files.values())
        out["first_read"] = measure_each(materialized, touch).to_dict()  # each block's CRC checked on the way
        out["verified"] = measure_each(materialized, touch).to_dict()
        out["blocks"] = blocks
        out["cache_nbytes"] = int(ds.cache_nbytes)
        return out

    # ----------------------------------------------------------------- samples
    def sample_order(self, n_samples: int, count: int, salt: int = 0) -> list[int]:
        rng = np.random.default_rng([self.cfg.seed, salt])
        order = rng.permutation(n_samples)
        reps = -(-count // n_samples)
        return [int(i) for i in np.concatenate([order] * reps)[:count]]

    def time_per_sample(self, ds: Any, strategy: str) -> dict[str, Timing]:
        """The sensor window of one sample, in random order: as returned, and materialized."""
        count = self.cfg.no_cache_loads if strategy == "none" else self.cfg.per_sample_loads
        warm = self.sample_order(len(ds), self.cfg.warmup_loads, salt=1)
        order = self.sample_order(len(ds), count, salt=2)
        buf = np.empty((self.cfg.window, int(ds.num_channels)), np.float32)
        buf.fill(0.0)

        def returned(i: int) -> None:
            ds.sensor_window(i)

        def materialized(i: int) -> None:
            window, _ = ds.sensor_window(i)
            np.copyto(buf[buf.shape[0] - window.shape[0] :], window)

        out = {"returned": measure_each(returned, order, warmup_items=warm)}
        if strategy == "none":  # the no-cache path allocates a fresh array anyway: one copy is enough
            out["materialized"] = out["returned"]
        else:
            out["materialized"] = measure_each(materialized, order, warmup_items=warm)
        return out

    # ----------------------------------------------------------------- batches
    def loader(self, ds: Any, num_workers: int, salt: int = 0, indices: list[int] | None = None,
               gather: bool = True) -> Any:
        """The loader training uses (:func:`vla_sensor.data.build_loader`) over shuffled full batches of
        ``indices`` (default: every sample); ``gather=False`` makes the workers read the windows."""
        from vla_sensor.data.config import data_config
        from vla_sensor.data.loader import build_loader

        order = self.sample_order(len(ds), len(ds), salt=100 + salt) if indices is None else list(indices)
        size = self.cfg.batch_size
        batches = [order[i : i + size] for i in range(0, len(order) - size + 1, size)]
        data = data_config(batch_size=size, num_workers=num_workers, seed=self.cfg.seed * 1000 + salt,
                           gather_sensor_in_main=gather)
        return build_loader(ds, data, shuffle=True, batches=batches)

    def time_batches(self, ds: Any, strategy: str, num_workers: int) -> Timing:
        """Seconds per batch: each repeat is a fresh pass over ``batches`` batches (workers warm)."""
        n = self.cfg.no_cache_batches if strategy == "none" else self.cfg.batches
        n = max(1, min(n, len(ds) // self.cfg.batch_size))
        loader = self.loader(ds, num_workers, salt=num_workers)
        next(iter(loader))  # start the workers and warm up; not timed
        samples = []
        runs = 2 if strategy == "none" else 3
        for _ in range(runs):
            start = time.perf_counter()
            it: Iterator[Any] = iter(loader)
            for _ in range(n):
                next(it)
            samples.append((time.perf_counter() - start) / n)
        loader.close()
        return Timing.from_samples(samples)

    def batch_nbytes(self, ds: Any) -> int:
        """Bytes of one collated batch (every tensor), the memcpy floor's size for batches."""
        batch = next(iter(self.loader(ds, 0)))
        return int(sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor)))

    # ------------------------------------------------------------------ epochs
    def epoch(self, ds: Any, strategy: str, touch: bool) -> dict[str, Any]:
        """First and subsequent epochs over a fixed subset; worker memory after the first."""
        count = min(self.cfg.epoch_samples, len(ds))
        subset = self.sample_order(len(ds), count, salt=3)
        workers = max(self.cfg.num_workers)
        if touch:
            touch_cache(ds)
        gc.collect()
        main_before_loader = read_smaps_rollup() if smaps_available() else None
        before = set(child_pids())
        start = time.perf_counter()
        # the workers read the windows themselves here, so the memory figures say whether each worker
        # shares the cache's pages or holds a private copy
        loader = self.loader(ds, workers, salt=7, indices=subset, gather=False)
        for _ in loader:
            pass
        first = time.perf_counter() - start
        memory: dict[str, Any] = {}
        if workers > 0 and smaps_available():
            pids = [p for p in child_pids() if p not in before]
            memory["workers"] = [_safe_smaps(p) for p in pids]
            location = cache_location(ds)
            if location is not None and pids and pagemap_available(pids[0]):
                memory["cache_pages"] = [_safe_pages(p, location) for p in pids]
            memory["main"] = read_smaps_rollup().to_dict()
            if main_before_loader is not None:
                memory["main_before_loader"] = main_before_loader.to_dict()
        subsequent = []
        for _ in range(2 if strategy == "none" else 3):
            start = time.perf_counter()
            for _ in loader:
                pass
            subsequent.append(time.perf_counter() - start)
        loader.close()
        return {
            "samples": count,
            "num_workers": workers,
            "first": Timing.from_samples([first]),
            "subsequent": Timing.from_samples(subsequent),
            "memory": memory,
        }


def touch_cache(ds: Any) -> None:
    """Read every cached page once in this process (so pages later mapped by workers count as shared)."""
    for i in range(len(ds)):
        window, _ = ds.sensor_window(i)
        float(np.add.reduce(window[:, ::256], axis=None))


def _safe_smaps(pid: int) -> dict[str, Any]:
    try:
        return read_smaps_rollup(pid).to_dict()
    except OSError as exc:  # the worker exited
        return {"pid": pid, "error": str(exc)}


def _safe_pages(pid: int, location: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"pid": pid, **worker_cache_pages(pid, location)}
    except OSError as exc:
        return {"pid": pid, "error": str(exc)}


def quantization_error(reference: Any, quantized: Any, indices: list[int], channel_range: np.ndarray) -> dict[str, float]:
    """Error of ``quantized`` windows against the float32 ``reference`` windows, over ``indices``."""
    max_abs = 0.0
    total = 0.0
    count = 0
    per_channel = np.zeros(channel_range.shape[0], np.float64)
    max_rel_value = 0.0
    for i in indices:
        a, _ = reference.sensor_window(i)
        b, _ = quantized.sensor_window(i)
        err = np.abs(a.astype(np.float64) - b)
        per_channel = np.maximum(per_channel, err.max(axis=0))
        max_abs = max(max_abs, float(err.max()))
        total += float(err.sum())
        count += err.size
        nz = np.abs(a) > 1e-3
        if nz.any():
            max_rel_value = max(max_rel_value, float((err[nz] / np.abs(a[nz])).max()))
    safe_range = np.where(channel_range > 0, channel_range, 1.0)
    return {
        "max_abs": max_abs,
        "mean_abs": total / max(count, 1),
        "max_rel_range": float((per_channel / safe_range).max()),
        "max_rel_value": max_rel_value,
        "windows_compared": len(indices),
    }


def within_bound(dtype: str, q: dict[str, float]) -> bool:
    """The storage module's documented bounds: int8 ≤ half a step (range/254), float16 ≈ 2^-11 relative."""
    if dtype == "int8":
        return q["max_rel_range"] <= 0.5 / 254 * (1 + 1e-3) + 1e-6
    if dtype == "float16":
        return q["max_rel_value"] <= 2.0**-11 * (1 + 1e-3)
    return q["max_abs"] == 0.0


def channel_ranges(paths: list[Path]) -> np.ndarray:
    """Per-channel max − min over the raw streams (the scale quantization error is judged against)."""
    from vla_sensor.data.format import TrajectoryReader

    reader = TrajectoryReader()
    lo = hi = None
    for p in paths:
        traj = reader.read(p)
        if not traj.has_sensor:
            continue
        s = traj.load_sensor_stream()
        lo = s.min(axis=0) if lo is None else np.minimum(lo, s.min(axis=0))
        hi = s.max(axis=0) if hi is None else np.maximum(hi, s.max(axis=0))
    if lo is None or hi is None:
        return np.ones(CHANNELS, np.float32)
    return (hi - lo).astype(np.float64)


def _worker_summary(epoch: dict[str, Any]) -> dict[str, Any]:
    workers = [w for w in epoch.get("memory", {}).get("workers", []) if "error" not in w]
    if not workers:
        return {}

    def mean(key: str) -> float:
        return float(np.mean([w[key] for w in workers]))

    pages = [p for p in epoch.get("memory", {}).get("cache_pages", []) if "error" not in p]
    page_summary = {}
    if pages:
        page_summary = {
            "worker_cache_private_copy_max": max(p["private_copy_bytes"] for p in pages),
            "worker_cache_shared_mean": float(np.mean([p["shared_bytes"] for p in pages])),
            "worker_cache_resident_mean": float(np.mean([p["resident_bytes"] for p in pages])),
            "cache_pages": pages,
        }
    return {
        **page_summary,
        "worker_private": mean("private"),
        "worker_private_dirty": mean("private_dirty"),
        "worker_shared": mean("shared"),
        "worker_pss": mean("pss"),
        "worker_rss": mean("rss"),
        "workers": workers,
    }


def run(cfg: DataBenchConfig, work_dir: Path, on_floor: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Every data-loading and memory measurement. ``on_floor(batch_nbytes)`` lets the caller time
    the memcpy floor for the batch size once it is known."""
    threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    try:
        return _run(cfg, work_dir, on_floor)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: DataBenchConfig, work_dir: Path, on_floor: Callable[[int], None] | None) -> dict[str, Any]:
    paths, gen_seconds = generate(cfg, work_dir / "recordings")
    bench = DataBench(cfg, paths, work_dir)
    strategies = [s for s in ("none", "stream", "windows", "mmap") if s in cfg.strategies]
    data: dict[str, Any] = {
        "strategies": [s for s in ("none", "windows", "stream", "mmap") if s in strategies],
        "dtypes": list(cfg.dtypes),
        "batch_size": cfg.batch_size,
        "generate_seconds": gen_seconds,
        "per_sample": {},
        "per_sample_materialized": {},
        "torch_threads": torch.get_num_threads(),
        "batch": {str(w): {} for w in cfg.num_workers},
        "epoch": {},
        "init": {},
    }
    memory: dict[str, Any] = {"cache_nbytes": {}, "processes": {}, "quantization": {}}
    epochs: dict[str, dict[str, Any]] = {}
    ranges: np.ndarray | None = None
    reference: Any = None
    quant_indices: list[int] = []

    for strategy in strategies:
        t_strategy = time.perf_counter()
        inits, ds = bench.time_init(strategy)
        data["init"].update({k: v.to_dict() for k, v in inits.items()})
        # The main process's growth from one more (warm) build and a read of every window.
        del ds
        release_freed_memory()
        main_before = read_smaps_rollup() if smaps_available() else None
        ds = bench.build(strategy, cache_dir=bench.last_cache_dir if strategy == "mmap" else None)
        if strategy != "none":
            touch_cache(ds)
        main_after = read_smaps_rollup() if smaps_available() else None
        if "dataset" not in data:
            data["dataset"] = bench.describe(ds)
            memory["raw_sensor_nbytes"] = int(ds.raw_sensor_nbytes)
            data["batch_nbytes"] = bench.batch_nbytes(ds)
            if on_floor is not None:
                on_floor(data["batch_nbytes"])
        per = bench.time_per_sample(ds, strategy)
        data["per_sample"].setdefault(strategy, {})["float32"] = per["returned"].to_dict()
        data["per_sample_materialized"].setdefault(strategy, {})["float32"] = per["materialized"].to_dict()
        memory["cache_nbytes"].setdefault(strategy, {})["float32"] = int(ds.cache_nbytes)
        for workers in cfg.num_workers:
            data["batch"][str(workers)][strategy] = bench.time_batches(ds, strategy, workers).to_dict()
        epoch = bench.epoch(ds, strategy, touch=strategy != "none")
        epochs[strategy] = epoch
        data["epoch"].setdefault("first", {})[strategy] = epoch["first"].to_dict()
        data["epoch"].setdefault("subsequent", {})[strategy] = epoch["subsequent"].to_dict()
        data["epoch"]["samples"] = epoch["samples"]
        data["epoch"]["num_workers"] = epoch["num_workers"]
        proc: dict[str, Any] = {"cache_nbytes": int(ds.cache_nbytes), **_worker_summary(epoch)}
        if main_before is not None and main_after is not None:
            proc["main_private"] = main_after.private - main_before.private
            proc["main_private_dirty"] = main_after.private_dirty - main_before.private_dirty
            proc["main_rss"] = main_after.rss - main_before.rss
            proc["main_before"] = main_before.to_dict()
            proc["main_after"] = main_after.to_dict()
        proc["num_workers"] = epoch["num_workers"]
        memory["processes"][strategy] = proc

        if strategy == "mmap":
            data["verification"] = bench.verification_cost(bench.last_cache_dir)  # type: ignore[arg-type]
        if strategy == "stream":
            reference = ds
            ranges = channel_ranges(paths)
            quant_indices = bench.sample_order(len(ds), min(len(ds), 48), salt=4)
        for dtype in cfg.dtypes:
            if dtype == "float32" or strategy == "none":
                continue
            cache_dir = bench.fresh_cache_dir() if strategy == "mmap" else None
            qds = bench.build(strategy, dtype, cache_dir=cache_dir)
            memory["cache_nbytes"][strategy][dtype] = int(qds.cache_nbytes)
            qper = bench.time_per_sample(qds, strategy)
            data["per_sample"][strategy][dtype] = qper["returned"].to_dict()
            data["per_sample_materialized"][strategy][dtype] = qper["materialized"].to_dict()
            if reference is not None and ranges is not None:
                q = quantization_error(reference, qds, quant_indices, ranges)
                q["within_bound"] = within_bound(dtype, q)
                q["nbytes"] = int(qds.cache_nbytes)
                memory["quantization"].setdefault(strategy, {})[dtype] = q
            del qds
        if ds is not reference:
            del ds
        gc.collect()
        data.setdefault("strategy_seconds", {})[strategy] = time.perf_counter() - t_strategy
        log.info("data: %s measured in %.1f s", strategy, data["strategy_seconds"][strategy])

    base = memory["processes"].get("none", {}).get("worker_private")
    for proc in memory["processes"].values():
        if base is not None and "worker_private" in proc:
            proc["worker_private_extra_nbytes"] = max(proc["worker_private"] - base, 0.0)
            proc["worker_private_extra_raw"] = proc["worker_private"] - base
    # The table shows the stream strategy's codec error (the same codec serves windows and mmap).
    memory["quantization_by_strategy"] = memory.pop("quantization")
    memory["quantization"] = memory["quantization_by_strategy"].get("stream", {})
    return {"data": data, "memory": memory}


__all__ = ["DataBench", "ProcessMemory", "generate", "run"]
