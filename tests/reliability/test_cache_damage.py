"""Damage anywhere in a sensor or image cache file never reaches a sample (extends test_concurrent_cache.py).

Each case damages a complete cache after it was built, as a disk error or a stray write would: bytes
overwritten at several places inside the data (same file size), 1 MiB zeroed, the file truncated. The
next dataset opens it and every window / image it serves equals the no-cache path's, through each way
a sample is read: ``dataset.sensor_window`` (memory-mapped view), the loader's main-process gather
(positional reads on a thread pool) and DataLoader workers reading windows themselves. The damaged
file is rebuilt with a warning naming it, or refused, naming it, when its source is gone.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_sensor.data import disk_cache
from vla_sensor.data.dataset import InsertionDataset
from vla_sensor.data.disk_cache import CacheDamagedWarning
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.loader import build_loader

pytestmark = pytest.mark.timeout(180)
MIB = 1 << 20


def _ds(traj: Path, cache: Path | None, **kw) -> InsertionDataset:
    kw.setdefault("image_size", (96, 96))
    if cache is None:
        return InsertionDataset([traj], cache=False, sensor_window_size=300, progress=False, **kw)
    return InsertionDataset([traj], cache_strategy="mmap", cache_dir=cache, sensor_window_size=300,
                            progress=False, **kw)


def _damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if how == "truncate":
            f.truncate(size - 4096)
            return
        if how == "zero_1mib":
            f.seek(size // 3)
            f.write(b"\0" * min(MIB, size - size // 3 - 1))
            return
        frac = {"overwrite_quarter": 0.25, "overwrite_middle": 0.5, "overwrite_three_quarters": 0.75}[how]
        f.seek(int(size * frac))
        f.write(b"\xff" * 64)  # 0xffffffff is a NaN in float32: the kind of value a sample must never carry
    assert how == "truncate" or path.stat().st_size == size


DAMAGES = ["overwrite_quarter", "overwrite_middle", "overwrite_three_quarters", "zero_1mib", "truncate"]


@pytest.fixture
def traj(tiny_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "traj"
    shutil.copytree(tiny_root / "traj_000", dst)
    return dst


def _sensor_file(cache: Path) -> Path:
    (npy,) = cache.glob("*.npy")
    return npy


def _windows_via(ds: InsertionDataset, path: str) -> np.ndarray:
    if path == "view":
        return np.stack([ds.sensor_window(i)[0] for i in range(len(ds))])
    loader = build_loader(ds, shuffle=False, batch_size=4, num_workers=2, gather_sensor_in_main=(path == "gather"))
    try:
        assert loader.gathers == (path == "gather")
        return torch.cat([b["sensor_data"] for b in loader]).numpy()
    finally:
        loader.close()


@pytest.mark.parametrize("path", ["view", "gather", "workers"])
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_sensor_cache_never_reaches_a_sample(traj: Path, tmp_path: Path, how: str, path: str) -> None:
    cache = tmp_path / "cache"
    expected = np.stack([w for w, _ in (_ds(traj, None).sensor_window(i) for i in range(15))])
    _ds(traj, cache)  # builds the cache
    npy = _sensor_file(cache)
    _damage(npy, how)
    if path == "workers":  # the workers find it (a warning in their stderr) and rebuild it
        got = _windows_via(_ds(traj, cache), path)
    else:
        with pytest.warns(CacheDamagedWarning, match=npy.name):
            got = _windows_via(_ds(traj, cache), path)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, expected)
    assert _ds(traj, cache).cache.built_here == []  # rebuilt once, and sound now
    np.testing.assert_array_equal(_windows_via(_ds(traj, cache), "view"), expected)


@pytest.mark.parametrize("path", ["direct", "workers"])
@pytest.mark.parametrize("how", ["overwrite_quarter", "overwrite_middle", "zero_1mib", "truncate"])
def test_damaged_image_cache_never_reaches_a_sample(traj: Path, tmp_path: Path, how: str, path: str) -> None:
    cache = tmp_path / "cache"
    direct = _ds(traj, cache, cache_images=False)
    expected = torch.stack([direct[i]["images"] for i in range(len(direct))])
    _ds(traj, cache)
    npy = sorted((cache / "images").glob("*left*.npy"))[0]
    _damage(npy, how)
    if path == "direct":
        with pytest.warns(CacheDamagedWarning, match=npy.name):
            ds = _ds(traj, cache)
            got = torch.stack([ds[i]["images"] for i in range(len(ds))])
    else:
        loader = build_loader(_ds(traj, cache), shuffle=False, batch_size=5, num_workers=2)
        got = torch.cat([b["images"] for b in loader])
        loader.close()
    assert torch.equal(got, expected)


def test_damaged_cache_whose_source_is_gone_is_refused_naming_it(traj: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _ds(traj, cache)
    ds = _ds(traj, cache)  # opened while the source was there
    npy = _sensor_file(cache)
    _damage(npy, "overwrite_middle")
    (traj / "sensor.npz").unlink()
    with pytest.warns(CacheDamagedWarning), pytest.raises(DataFormatError, match=rf"{npy.name}.*refused"):
        for i in range(len(ds)):
            ds.sensor_window(i)


def test_verify_full_rebuilds_at_open(traj: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _ds(traj, cache)
    _damage(_sensor_file(cache), "overwrite_middle")
    ds = _ds(traj, cache, verify_full=True)
    assert ds.cache.built_here == [0]  # found and rebuilt before any sample


def _read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Every write below ``root`` fails as on a read-only mount (tests run as root, where chmod does not)."""
    real_open, real_mkdir = open, Path.mkdir

    def fake_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(str(root)) and any(c in mode for c in "wax+"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    def fake_mkdir(self, *args, **kwargs):
        if str(self).startswith(str(root)) and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(disk_cache, "open", fake_open, raising=False)
    monkeypatch.setattr(Path, "mkdir", fake_mkdir)


def test_read_only_cache_dir_is_a_clear_error_and_a_complete_cache_is_still_read(
        traj: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built, empty = tmp_path / "built", tmp_path / "empty"
    _ds(traj, built)
    empty.mkdir()
    _read_only(monkeypatch, tmp_path)
    ds = _ds(traj, built)  # complete caches are only read: a read-only directory serves them
    assert ds.cache.built_here == [] and ds.image_cache.built_here == []
    with pytest.raises(DataFormatError, match=rf"cache directory {empty}.* is not writable \(Read-only file system\)"):
        _ds(traj, empty)
    with pytest.raises(DataFormatError, match=rf"cache directory {tmp_path / 'missing'} is not writable"):
        _ds(traj, tmp_path / "missing")


def test_cache_dir_below_a_file_is_a_clear_error(traj: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DataFormatError, match=r"cache directory .*file.* is not writable \(Not a directory\)"):
        _ds(traj, tmp_path / "file" / "cache")
