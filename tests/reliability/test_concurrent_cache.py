"""The on-disk caches under concurrency and damage (extends tests/data/test_cache.py): N processes
starting at once build each file exactly once and read identical data, a builder killed mid-build
hands over to a waiting one, and damaged files (same size included) are rebuilt, never read."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from vla_sensor.data.cache import MmapCache
from vla_sensor.data.dataset import InsertionDataset
from vla_sensor.data.format import TrajectoryReader
from vla_sensor.data.windows import WindowSpec

pytestmark = pytest.mark.timeout(120)
CTX = mp.get_context("fork")  # DataLoader workers and ranks on Linux: same code, separate processes


def _dataset(root: Path, cache: Path | None) -> InsertionDataset:
    dirs = sorted(root.glob("traj_*"))
    if cache is None:
        return InsertionDataset(dirs, cache=False, cache_images=False, image_size=(28, 28),
                                sensor_window_size=64, progress=False)
    return InsertionDataset(dirs, cache_strategy="mmap", cache_dir=cache, image_size=(28, 28), sensor_window_size=64,
                            progress=False)


def _digest(ds: InsertionDataset) -> str:
    h = hashlib.sha256()
    for i in range(len(ds)):
        s = ds[i]
        h.update(s["sensor_data"].numpy().tobytes())
        h.update(s["images"].numpy().tobytes())
    return h.hexdigest()


def _open_and_read(root: str, cache: str, barrier, out, fault: str = "") -> None:
    if fault == "die_mid_build":  # hold the lock with half a temp file written, then die like a killed rank
        real = np.lib.format.write_array_header_1_0

        def write_header(f, header, *args, **kwargs):  # the cache writer's first write
            if ".tmp" in str(getattr(f, "name", "")):
                f.write(b"\x93NUMPY" + b"\0" * 4096)
                f.flush()
                time.sleep(1.0)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(f, header, *args, **kwargs)

        np.lib.format.write_array_header_1_0 = write_header
    if barrier is not None:
        barrier.wait()
    ds = _dataset(Path(root), Path(cache))
    out.put((os.getpid(), len(ds.cache.built_here), len(ds.image_cache.built_here), _digest(ds)))


def _start(root: Path, cache: Path, barrier, out, fault: str = ""):
    p = CTX.Process(target=_open_and_read, args=(str(root), str(cache), barrier, out, fault))
    p.start()
    return p


def test_n_processes_at_once_build_once_and_read_identical_data(tiny_root: Path, tmp_path: Path) -> None:
    n = 4
    barrier, out = CTX.Barrier(n), CTX.Queue()
    procs = [_start(tiny_root, tmp_path / "cache", barrier, out) for _ in range(n)]
    results = [out.get(timeout=90) for _ in range(n)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(r[1] for r in results) == 2, "each sensor trajectory's cache is built exactly once"  # 2 with sensor
    assert sum(r[2] for r in results) == 3 * 2, "each (trajectory, view) image cache is built exactly once"
    assert {r[3] for r in results} == {_digest(_dataset(tiny_root, None))}, "a process read different data"
    assert not list((tmp_path / "cache").rglob("*tmp*"))


def test_builder_killed_mid_build_hands_over_to_a_waiting_one(tiny_root: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", CTX.Queue()
    doomed = _start(tiny_root, cache, None, out, "die_mid_build")
    deadline = time.time() + 60
    while not list(cache.glob("*.tmp*.npy")):  # it holds the lock and is writing
        assert time.time() < deadline and doomed.is_alive()
        time.sleep(0.02)
    waiting = [_start(tiny_root, cache, None, out) for _ in range(2)]
    doomed.join(30)
    assert doomed.exitcode == -signal.SIGKILL
    results = [out.get(timeout=90) for _ in waiting]
    for p in waiting:
        p.join(30)
        assert p.exitcode == 0
    assert sum(r[1] for r in results) == 2  # the survivors built both trajectories once, between them
    assert {r[3] for r in results} == {_digest(_dataset(tiny_root, None))}
    assert not list(cache.rglob("*tmp*")), "the dead builder's temp file was left behind"


def _mmap(traj: Path, cache: Path, **kw) -> MmapCache:
    return MmapCache([TrajectoryReader().read(traj)], WindowSpec(64), cache_dir=cache, progress=False, **kw)


def _flip(path: Path, offset: int, n: int = 16) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0x5A for b in data))


@pytest.mark.parametrize("damage", ["garbled_header", "data_head", "other_trajectory", "middle_verify_full"])
def test_same_size_corruption_is_rebuilt_never_read(tiny_root: Path, tmp_path: Path, damage: str) -> None:
    traj, cache = tmp_path / "traj", tmp_path / "cache"
    shutil.copytree(tiny_root / "traj_000", traj)
    kw = {"verify_full": True} if damage == "middle_verify_full" else {}
    expected = _mmap(traj, cache, **kw).window(12)[0].copy()
    npy = next(cache.glob("*.npy"))
    size = npy.stat().st_size
    if damage == "garbled_header":
        _flip(npy, 10, 32)
    elif damage == "data_head":
        _flip(npy, 256)
    elif damage == "other_trajectory":  # a valid .npy of the same shape, but not this trajectory's stream
        np.save(npy, np.asarray(np.load(npy)) + 1.0)
    else:  # beyond the checked ends: only verify_full=true (a full hash at start) sees it
        _flip(npy, size // 2)
    assert npy.stat().st_size == size
    again = _mmap(traj, cache, **kw)
    assert again.built_here == [0], f"{damage}: the damaged cache was read as data"
    np.testing.assert_array_equal(again.window(12)[0], expected)


def test_source_rewritten_with_same_size_and_mtime_is_rebuilt(tiny_root: Path, tmp_path: Path) -> None:
    traj, cache = tmp_path / "traj", tmp_path / "cache"
    shutil.copytree(tiny_root / "traj_000", traj)
    first = _mmap(traj, cache).window(12)[0].copy()
    src = traj / "sensor.npz"
    st = src.stat()
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["forces"] = arrays["forces"] + 1.0  # same shapes, same file size
    np.savez(src, **arrays)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # e.g. restored by rsync -t or a copy tool
    assert src.stat().st_size == st.st_size and src.stat().st_mtime_ns == st.st_mtime_ns
    again = _mmap(traj, cache)
    assert again.built_here == [0]
    fresh = _mmap(traj, tmp_path / "fresh").window(12)[0]
    np.testing.assert_array_equal(again.window(12)[0], fresh)
    assert not np.array_equal(fresh, first)
