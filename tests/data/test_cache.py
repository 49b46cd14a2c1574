"""Cache strategies: identical windows, memory, and the mmap cache's build/rebuild rules."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from vla_sensor import InsertionDataset
from vla_sensor.data.cache import MmapCache
from vla_sensor.data.cache_tool import clean
from vla_sensor.data.config import strategy_settings
from vla_sensor.data.format import TrajectoryReader
from vla_sensor.data.storage import encode_stream, max_abs_error_bound
from vla_sensor.data.windows import WindowSpec

MODES = {
    "fixed": {"sensor_window_size": 200},
    "seconds": {"sensor_window_seconds": 0.25},
    "adaptive": {"adaptive_window": True},
}


def _ds(dirs, strategy, cache_dir, **kw):
    return InsertionDataset(dirs, **strategy_settings(strategy), cache_dir=cache_dir, progress=False, **kw)


@pytest.mark.parametrize("mode", list(MODES))
def test_every_strategy_returns_bit_identical_windows(small_dirs: list[Path], cache_dir: Path, mode: str) -> None:
    sets = {s: _ds(small_dirs, s, cache_dir, **MODES[mode]) for s in ["none", "windows", "stream", "mmap"]}
    ref = sets["none"]
    for i in range(len(ref)):
        w0, n0 = ref.sensor_window(i)
        for name, ds in sets.items():
            w, n = ds.sensor_window(i)
            assert n == n0 and w.dtype == np.float32, name
            assert np.array_equal(w, w0), (name, i)
    lengths = ref.sensor_lengths()
    assert (lengths[ref.sample_traj == 3] == 0).all()  # the trajectory without sensor
    if mode != "fixed":  # 325/650/1300 Hz streams give different T
        per_traj = [int(np.median(lengths[ref.sample_traj == k][2:])) for k in range(3)]
        assert per_traj[0] < per_traj[1] < per_traj[2]


@pytest.mark.parametrize("dtype,limit", [("float32", 1.1), ("float16", 0.55), ("int8", 0.3)])
def test_lean_caches_stay_near_the_raw_stream_and_within_error(small_dirs, cache_dir, dtype, limit) -> None:
    ref = _ds(small_dirs, "none", cache_dir, sensor_window_size=200)
    for strategy in ["stream", "mmap"]:
        ds = _ds(small_dirs, strategy, cache_dir, sensor_window_size=200, cache_dtype=dtype)
        assert 0 < ds.cache_nbytes <= limit * ds.raw_sensor_nbytes
        stream = TrajectoryReader().read(small_dirs[1]).load_sensor_stream()
        bound = max_abs_error_bound(stream, encode_stream(stream, dtype))
        for i in np.flatnonzero(ref.sample_traj == 1):
            w0, n = ref.sensor_window(i)
            w, _ = ds.sensor_window(i)
            s, e = ds.cache.starts[i], ds.cache.ends[i]
            assert (np.abs(w[-n:] - w0[-n:]) <= bound[s:e]).all()
            assert not w[:-n].any()  # padding stays exactly zero


def test_per_window_cache_grows_with_samples_times_window(small_dirs, cache_dir) -> None:
    ds = _ds(small_dirs[:3], "windows", cache_dir, sensor_window_size=400)
    assert ds.cache_nbytes == len(ds) * 400 * 1026 * 4


def _mmap(traj_dir: Path, cache_dir: Path, **kw) -> MmapCache:
    t = TrajectoryReader().read(traj_dir)
    return MmapCache([t], WindowSpec(64), cache_dir=cache_dir, progress=False, **kw)


def test_mmap_is_reused_warm_and_rebuilt_when_the_source_changes(traj_copy, cache_dir) -> None:
    cold = _mmap(traj_copy, cache_dir)
    assert cold.built_here == [0]
    warm = _mmap(traj_copy, cache_dir)
    assert warm.built_here == []
    np.testing.assert_array_equal(cold.window(10)[0], warm.window(10)[0])
    with np.load(traj_copy / "sensor.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["alines"] = arrays["alines"] + 1.0
    np.savez(traj_copy / "sensor.npz", **arrays)
    fresh = _mmap(traj_copy, cache_dir)
    assert fresh.built_here == [0]
    np.testing.assert_array_equal(fresh.window(10)[0][:, 1:], cold.window(10)[0][:, 1:] + 1.0)
    assert len(list(cache_dir.glob("*.npy"))) == 2  # a build deletes nothing: the stale version stays ...
    out = clean(cache_dir)
    assert [Path(p).name for p, _ in out["removed"]] == [cold._files[0].path.name]  # ... until cleaned
    assert "changed" in out["removed"][0][1] or "superseded" in out["removed"][0][1]
    assert [p.name for p in cache_dir.glob("*.npy")] == [fresh._files[0].path.name]
    assert _mmap(traj_copy, cache_dir).built_here == []


@pytest.mark.parametrize("damage", ["truncate", "flip_tail", "no_sidecar", "bad_sidecar"])
def test_damaged_mmap_cache_is_rebuilt_never_read(traj_copy, cache_dir, damage) -> None:
    ref = _mmap(traj_copy, cache_dir)
    expected = ref.window(12)[0].copy()
    del ref
    npy = next(cache_dir.glob("*.npy"))
    if damage == "truncate":
        with open(npy, "r+b") as f:
            f.truncate(npy.stat().st_size - 4096)
    elif damage == "flip_tail":
        with open(npy, "r+b") as f:
            f.seek(-8, os.SEEK_END)
            f.write(b"\xff" * 8)
    elif damage == "no_sidecar":
        npy.with_suffix(".json").unlink()
    else:
        npy.with_suffix(".json").write_text("{not json")
    again = _mmap(traj_copy, cache_dir)
    assert again.built_here == [0]
    np.testing.assert_array_equal(again.window(12)[0], expected)


def _build_in_process(args: tuple[str, str]) -> list[int]:
    traj_dir, cache_dir = args
    return _mmap(Path(traj_dir), Path(cache_dir)).built_here


def test_one_builder_while_concurrent_processes_wait(traj_copy, cache_dir) -> None:
    ctx = mp.get_context("fork")
    with ctx.Pool(4) as pool:
        built = pool.map(_build_in_process, [(str(traj_copy), str(cache_dir))] * 4)
    assert sorted(len(b) for b in built) == [0, 0, 0, 1]
    assert len(list(cache_dir.glob("*.npy"))) == 1 and not list(cache_dir.glob("*tmp*"))


def test_mmap_is_opened_lazily_and_never_pickled(small_dirs, cache_dir) -> None:
    import pickle

    ds = _ds(small_dirs, "mmap", cache_dir, sensor_window_size=64)
    ds.sensor_window(3)
    first = next(iter(ds.cache._files.values()))
    assert first._map is not None  # mapped in this process on first use
    clone = pickle.loads(pickle.dumps(ds))
    assert all(f._map is None and f._fd == -1 for f in clone.cache._files.values())
    np.testing.assert_array_equal(clone.sensor_window(3)[0], ds.sensor_window(3)[0])
    assert len(pickle.dumps(ds)) < ds.raw_sensor_nbytes / 20  # no stream inside the pickle


def test_caches_of_every_dtype_coexist_in_one_dir(traj_copy, cache_dir) -> None:
    """Switching the storage dtype back and forth reuses each dtype's cache: a build deletes no other file."""
    first = {d: _mmap(traj_copy, cache_dir, dtype=d) for d in ("float32", "float16", "int8")}
    assert all(c.built_here == [0] for c in first.values())
    assert len(list(cache_dir.glob("*.npy"))) == 3
    for d in ("int8", "float32", "float16", "float32"):
        again = _mmap(traj_copy, cache_dir, dtype=d)
        assert again.built_here == [], d
        np.testing.assert_array_equal(again.window(9)[0], first[d].window(9)[0])
    assert clean(cache_dir)["removed"] == []  # none of them is stale


_PEAK = """
import sys
from pathlib import Path
import vla_sensor.data.cache as cache, vla_sensor.data.npz_io as npz_io, vla_sensor.data.synthetic as synthetic
cache.BUILD_ROWS_BYTES = npz_io.CHUNK_BYTES = synthetic.OCT_PIECE_BYTES = 1 << 20  # small pieces, small test
out, seconds, step = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS mark: count the step, not the imports
if step == "generate":
    synthetic.generate_trajectory(out, 0, seconds=seconds, action_rate=1.0, image_size=8, views=("left",))
else:
    from vla_sensor.data.format import TrajectoryReader
    from vla_sensor.data.windows import WindowSpec
    cache.MmapCache([TrajectoryReader().read(out)], WindowSpec(8), cache_dir=out.parent / "c", dtype=step,
                    progress=False)
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def test_generator_and_cache_builds_hold_a_piece_not_the_recording(tmp_path: Path) -> None:
    """Peak memory of generating and caching a recording does not grow with its length (4x longer here)."""
    import subprocess
    import sys

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the peak-RSS mark")

    def peak(seconds: float, step: str) -> int:
        out = tmp_path / f"s{seconds:g}" / "traj"
        run = subprocess.run([sys.executable, "-c", _PEAK, str(out), str(seconds), step], capture_output=True,
                             text=True, cwd=Path(__file__).parents[2], check=True)
        return int(run.stdout.split()[-1])

    short, long_ = 10.0, 40.0
    grown = (long_ - short) * 650 * 1026 * 4  # bytes more of float32 sensor data: 80 MB
    for step in ("generate", "float32", "int8"):
        a, b = peak(short, step), peak(long_, step)
        assert b - a < 0.1 * grown, (step, a, b)
