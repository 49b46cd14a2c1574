"""Past RAM: shuffled loading when the sensor cache is larger than the memory the training process has.

Generated 650 Hz recordings are cached (float32 ``mmap``); datasets of ``ratios`` × the memory limit
are then loaded by ``build_loader(ds, shuffle=True, batch_size=16, num_workers=2)`` in a child process
confined by a cgroup memory limit (page cache included, so the dataset cannot sit in RAM), the page
cache of every file dropped first. Each loading mode is one child:

- ``mmap_copy``: the gather before positional reads: each window copied from the memory map by page
  faults (the kernel's read-ahead pulls in more than the window), one after another, no prefetch;
- ``pread_1``: ``os.preadv`` into the batch buffer, read-ahead off, one read in flight, one batch ahead;
- ``pread_threads``: the same with ``gather_threads`` reads in flight (the default loader);
- ``chunks``: ``pread_threads`` with ``data.sampling=chunks`` (runs of 16 consecutive samples).

Reported per mode and size: batches/s, per-sample ms, disk bytes read by the gathering process per
window byte, and the warm start (dataset construction with the cache on disk). Beside them, the
disk's own floor measured in the same run on the same files: random window-sized reads, one and
``floor_threads`` in flight. And the peak RSS of generating and caching a recording at two lengths.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.bench.config import ScaleBenchConfig
from vla_sensor.bench.fmt import nbytes, table

CHANNELS = 1026
MODES = ("mmap_copy", "pread_1", "pread_threads", "chunks")
MODE_LABELS = {
    "mmap_copy": "memory map, page faults, one window at a time (the previous gather)",
    "pread_1": "positional reads, 1 in flight, one batch ahead",
    "pread_threads": "positional reads, {threads} in flight, one batch ahead (default)",
    "chunks": "same, `data.sampling=chunks` (runs of 16 consecutive samples)",
}


# ----------------------------------------------------------------------------- memory limit
def memory_cgroup() -> tuple[Path | None, str]:
    """A directory where a child memory cgroup can be made (v2 or v1), or None and why not."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError as exc:
        return None, f"no /proc/self/cgroup ({exc})"
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            base = Path("/sys/fs/cgroup") / rel.lstrip("/")
            if "memory" in (base / "cgroup.controllers").read_text().split() and os.access(base, os.W_OK):
                return base, "cgroup v2"
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
            if base.is_dir() and os.access(base, os.W_OK):
                return base, "cgroup v1"
    return None, "no writable memory cgroup (needs root and a memory controller)"


class MemoryLimit:
    """A child cgroup of ``limit`` bytes; ``enter`` (a subprocess preexec_fn) moves the caller into it."""

    def __init__(self, base: Path, limit: int, kind: str) -> None:
        self.path = base / f"vla_sensor_scale_{os.getpid()}"
        self.kind = kind
        self.path.mkdir(exist_ok=True)
        if kind == "cgroup v2":
            (self.path / "memory.max").write_text(str(limit))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit))

    def enter(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> int | None:
        name = "memory.peak" if self.kind == "cgroup v2" else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    def reset_peak(self) -> None:
        if self.kind == "cgroup v1":
            (self.path / "memory.max_usage_in_bytes").write_text("0")

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def drop_page_cache(root: Path, global_drop: bool = False) -> None:
    """Evict every file under ``root`` from the page cache (``posix_fadvise DONTNEED``; files are clean)."""
    os.sync()
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    if global_drop:
        with contextlib.suppress(OSError):  # not permitted: the per-file eviction above still holds
            Path("/proc/sys/vm/drop_caches").write_text("3")


def read_bytes(pid: int | str = "self") -> int:
    """Bytes this process (all its threads) caused to be fetched from storage (``/proc/<pid>/io``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------- the data
def recordings(cfg: ScaleBenchConfig, work: Path, count: int) -> list[Path]:
    """``count`` recordings of ``trajectory_seconds`` (generated once, in bounded memory)."""
    from vla_sensor.data.synthetic import generate_trajectory

    out = []
    for i in range(count):
        d = work / "recordings" / f"traj_{i:03d}"
        if not (d / "meta.json").exists():
            generate_trajectory(d, i, seconds=cfg.trajectory_seconds, action_rate=cfg.action_rate,
                                image_size=cfg.image_size, views=("left",), seed=cfg.seed)
        out.append(d)
    return out


def _dataset(dirs: list[Path], cache: Path, cfg: ScaleBenchConfig) -> Any:
    from vla_sensor.data.dataset import InsertionDataset

    return InsertionDataset([str(d) for d in dirs], cache_strategy="mmap", cache_dir=str(cache),
                            sensor_window_size=cfg.window, image_size=(cfg.image_size, cfg.image_size),
                            view_selection=["left"], progress=False)


# ------------------------------------------------------------------------------ the child run
def child_main(argv: list[str]) -> None:
    """One measurement in this (confined) process; prints a JSON line."""
    args = json.loads(argv[0])
    from vla_sensor.bench.config import ScaleBenchConfig as Cfg

    cfg = Cfg(**args["cfg"])
    mode = args["mode"]
    if mode == "mmap_copy":  # the gather before positional reads: copies out of the memory map
        from vla_sensor.data.cache import MmapCache, SensorCache

        MmapCache._copy_window = SensorCache._copy_window  # type: ignore[method-assign]
    from vla_sensor.data.config import data_config
    from vla_sensor.data.loader import build_loader, make_batch_sampler
    from vla_sensor.training.sampler import EndlessBatches

    t0 = time.perf_counter()
    ds = _dataset([Path(d) for d in args["dirs"]], Path(args["cache"]), cfg)
    init_s = time.perf_counter() - t0
    threads = {"mmap_copy": 0, "pread_1": 1}.get(mode, cfg.gather_threads)
    data = data_config(ds.config, batch_size=cfg.batch_size, num_workers=cfg.num_workers, gather_threads=threads,
                       sampling="chunks" if mode == "chunks" else "shuffled", seed=args["seed"])
    # epoch after epoch, as training draws them (a small dataset has fewer batches than are timed)
    batches = EndlessBatches(make_batch_sampler(ds, data, shuffle=True, drop_last=True))
    loader = build_loader(ds, data, shuffle=True, batches=batches)
    it = iter(loader)
    for _ in range(cfg.warmup_batches):
        next(it)
    before, rows = read_bytes(), 0
    start = time.perf_counter()
    for _ in range(cfg.batches):
        batch = next(it)
        rows += int(batch["sensor_lengths"].sum())
    seconds = time.perf_counter() - start
    disk = read_bytes() - before
    loader.close()
    window_bytes = rows * CHANNELS * 4
    print(json.dumps({
        "mode": mode, "init_s": init_s, "batches_per_s": cfg.batches / seconds,
        "per_sample_ms": seconds / (cfg.batches * cfg.batch_size) * 1e3, "disk_bytes": disk,
        "window_bytes": window_bytes, "disk_per_window_byte": disk / max(window_bytes, 1),
        "cache_bytes": int(ds.cache_nbytes), "gather_threads": threads,
    }))


def _run_child(mode: str, dirs: list[Path], cache: Path, cfg: ScaleBenchConfig, limit: MemoryLimit | None,
               seed: int) -> dict[str, Any]:
    from dataclasses import asdict

    payload = json.dumps({"mode": mode, "dirs": [str(d) for d in dirs], "cache": str(cache), "cfg": asdict(cfg),
                          "seed": seed})
    if limit is not None:
        limit.reset_peak()
    proc = subprocess.run([sys.executable, "-m", "vla_sensor.bench.scale_bench", payload], capture_output=True,
                          text=True, preexec_fn=limit.enter if limit is not None else None, timeout=900)
    if proc.returncode != 0:
        return {"mode": mode, "error": f"exit {proc.returncode}: {proc.stderr[-600:]}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["cgroup_peak_bytes"] = limit.peak() if limit is not None else None
    return out


# ---------------------------------------------------------------------------------- the floor
def disk_floor(files: list[Path], window_bytes: int, reads: int, threads: int, seed: int) -> dict[str, Any]:
    """Random window-sized positional reads over ``files`` from a dropped page cache."""
    rng = np.random.default_rng(seed)
    slots = [(k, j * window_bytes) for k, f in enumerate(files) for j in range(f.stat().st_size // window_bytes)]
    chosen = rng.choice(len(slots), min(reads, len(slots)), replace=False)  # disjoint: none served from cache
    picks, offsets = [slots[c][0] for c in chosen], [slots[c][1] for c in chosen]
    reads = len(picks)
    fds = [os.open(f, os.O_RDONLY) for f in files]
    for fd in fds:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    bufs = [bytearray(window_bytes) for _ in range(threads)]

    def read(i: int) -> None:
        os.preadv(fds[picks[i]], [memoryview(bufs[i % threads])], offsets[i])

    try:
        before, start = read_bytes(), time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(read, range(reads)))
        seconds = time.perf_counter() - start
        disk = read_bytes() - before
    finally:
        for fd in fds:
            os.close(fd)
    return {"threads": threads, "reads": reads, "windows_per_s": reads / seconds,
            "mb_per_s": reads * window_bytes / seconds / 1e6, "disk_per_window_byte": disk / (reads * window_bytes)}


# ------------------------------------------------------------------------------ build memory
_PEAK = """
import sys
from pathlib import Path
from vla_sensor.data import cache, synthetic
from vla_sensor.data.format import TrajectoryReader
from vla_sensor.data.windows import WindowSpec
out, seconds = Path(sys.argv[1]), float(sys.argv[2])
def peak():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
def reset():
    open("/proc/self/clear_refs", "w").write("5")
reset()
synthetic.generate_trajectory(out, 0, seconds=seconds, action_rate=2.0, image_size=16, views=("left",))
gen = peak()
reset()
cache.MmapCache([TrajectoryReader().read(out)], WindowSpec(650), cache_dir=out.parent / "cache", progress=False)
print(gen, peak())
"""


def build_memory(seconds: list[float], work: Path) -> list[dict[str, Any]]:
    """Peak RSS (after imports) of generating and of caching one recording of each length."""
    rows = []
    for s in seconds:
        out = work / f"build_{s:g}s" / "traj"
        proc = subprocess.run([sys.executable, "-c", _PEAK, str(out), str(s)], capture_output=True, text=True,
                              timeout=1800)
        if proc.returncode != 0:
            rows.append({"seconds": s, "error": proc.stderr[-400:]})
        else:
            gen, build = (int(x) for x in proc.stdout.split()[-2:])
            rows.append({"seconds": s, "stream_bytes": int((round(s * 650) + 1) * CHANNELS * 4),
                         "generate_peak_bytes": gen, "build_peak_bytes": build})
        shutil.rmtree(out.parent, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------------- the run
def measure_scale(cfg: ScaleBenchConfig, work_dir: Path) -> dict[str, Any]:
    """Every row of the scale section; JSON-able."""
    work = Path(work_dir) / "scale"
    work.mkdir(parents=True, exist_ok=True)
    limit_bytes = int(cfg.memory_limit_mb) << 20
    per_traj = (round(cfg.trajectory_seconds * 650) + 1) * CHANNELS * 4
    counts = [max(1, round(r * limit_bytes / per_traj)) for r in cfg.ratios]
    dirs = recordings(cfg, work, max(counts))
    cache = work / "cache"
    _dataset(dirs, cache, cfg)  # every cache built once (not timed here)
    base, kind = memory_cgroup() if cfg.cgroup else (None, "disabled by benchmark.scale.cgroup")
    limit = MemoryLimit(base, limit_bytes, kind) if base is not None else None
    result: dict[str, Any] = {
        "memory_limit_bytes": limit_bytes, "limit": kind if limit is not None else f"none: {kind}",
        "trajectory_bytes": per_traj, "batch_size": cfg.batch_size, "num_workers": cfg.num_workers,
        "gather_threads": cfg.gather_threads, "page_cache": "posix_fadvise(DONTNEED) on every file before each run"
        + (" and /proc/sys/vm/drop_caches" if cfg.drop_caches else ""), "sizes": [],
    }
    try:
        for ratio, count in zip(cfg.ratios, counts):
            subset = dirs[:count]
            row: dict[str, Any] = {"ratio": ratio, "trajectories": count, "dataset_bytes": count * per_traj, "modes": {}}
            for mode in cfg.modes:
                drop_page_cache(work, cfg.drop_caches)
                row["modes"][mode] = _run_child(mode, subset, cache, cfg, limit, seed=cfg.seed)
            result["sizes"].append(row)
        files = [p for p in cache.glob("*.npy")]
        window_bytes = cfg.window * CHANNELS * 4
        result["floor"] = []
        for threads in (1, cfg.floor_threads):
            drop_page_cache(work, cfg.drop_caches)
            result["floor"].append(disk_floor(files, window_bytes, cfg.floor_reads, threads, cfg.seed))
    finally:
        if limit is not None:
            limit.remove()
    result["build_memory"] = build_memory(list(cfg.build_seconds), work)
    if not cfg.keep_data:
        shutil.rmtree(work, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------- markdown
def format_scale_section(scale: dict[str, Any], device: str) -> str:
    if not scale or "sizes" not in scale:
        return f"### Past RAM (scale)\n\nNot measured: {scale.get('skipped', 'section disabled') if scale else 'section disabled'}."
    limit = scale["memory_limit_bytes"]
    floor = {f["threads"]: f for f in scale.get("floor", [])}
    bs = scale["batch_size"]
    rows = []
    for size in scale["sizes"]:
        label = f"{size['ratio']:g}× ({nbytes(size['dataset_bytes'])})"
        for mode, m in size["modes"].items():
            if "error" in m:
                rows.append([label, MODE_LABELS[mode].format(threads=scale["gather_threads"]), m["error"][:80], "", "", ""])
                continue
            rows.append([label, MODE_LABELS[mode].format(threads=scale["gather_threads"]), f"{m['batches_per_s']:.1f}",
                         f"{m['per_sample_ms']:.2f}", f"{m['disk_per_window_byte']:.2f}×",
                         f"{m['init_s']:.2f} s ({m['init_s'] / (size['dataset_bytes'] / 1e9):.3f} s/GB)"])
    for threads, f in sorted(floor.items()):
        rows.append(["disk floor", f"random window-sized reads, {threads} in flight ({f['mb_per_s']:.0f} MB/s)",
                     f"{f['windows_per_s'] / bs:.1f}",
                     f"{1e3 / f['windows_per_s']:.2f}", f"{f['disk_per_window_byte']:.2f}×", ""])
    header = ["Dataset / memory", "Gather", f"Batches/s (B={bs})", "Per sample (ms)", "Disk bytes per window byte",
              "Warm start"]
    brow = [[f"{b['seconds']:g} s recording ({nbytes(b.get('stream_bytes'))} float32)",
             nbytes(b.get("generate_peak_bytes")), nbytes(b.get("build_peak_bytes"))] for b in scale.get("build_memory", [])]
    parts = [
        "### Past RAM (scale)", device,
        f"Memory limit {nbytes(limit)} ({scale['limit']}); float32 `mmap` cache of 650 Hz recordings, window 650 rows "
        f"(2.67 MB); `build_loader(ds, shuffle=True, batch_size={bs}, num_workers={scale['num_workers']})`; page cache "
        f"dropped before each run ({scale['page_cache']}). Disk bytes: read by the gathering process "
        "(`/proc/<pid>/io`), per byte of valid window rows delivered. Warm start: dataset construction with the cache "
        "on disk and the page cache dropped.",
        table(header, rows),
        "Peak resident memory (after imports) of generating a recording and of building its cache:",
        table(["Recording", "Generate, peak RSS", "Cache build, peak RSS"], brow) if brow else "",
    ]
    return "\n\n".join(p for p in parts if p)


if __name__ == "__main__":
    child_main(sys.argv[1:])
