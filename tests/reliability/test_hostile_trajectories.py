"""A corpus of malformed trajectory directories: each gives a DataFormatError naming the file or key and
what was expected (never a bare numpy/PIL/torch error from deep inside), before or while the dataset
is built and every sample read, and never a hang."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vla_sensor.data.dataset import InsertionDataset
from vla_sensor.data.errors import DataFormatError

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _edit(path: Path, **changes: np.ndarray) -> None:
    np.savez(path, **{**_npz(path), **changes})


def _sensor(d: Path, **changes: np.ndarray) -> None:
    _edit(d / "sensor.npz", **changes)


def _actions(d: Path, **changes: np.ndarray) -> None:
    _edit(d / "actions.npz", **changes)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def _sensor_ts(d: Path) -> np.ndarray:
    return _npz(d / "sensor.npz")["timestamps"]


def _loop(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(path.name)  # a symlink to itself


def _gap(d: Path) -> None:
    """No sensor sample between the 4th and 6th action: adaptive windows there are empty."""
    s = _npz(d / "sensor.npz")
    keep = (s["timestamps"] <= 0.4) | (s["timestamps"] > 0.6)
    np.savez(d / "sensor.npz", **{k: v[keep] for k, v in s.items()})


IMG = "images/left/000003"
# (name, how to break a good trajectory, regex the message must match, dataset keyword arguments)
CASES: list[tuple[str, Callable[[Path], None], str, dict]] = [
    ("truncated_sensor_npz", lambda d: _truncate(d / "sensor.npz"), r"sensor\.npz: corrupt or truncated", {}),
    ("truncated_actions_npz", lambda d: _truncate(d / "actions.npz"), r"actions\.npz: corrupt or truncated", {}),
    ("empty_actions_file", lambda d: (d / "actions.npz").write_bytes(b""), r"actions\.npz: corrupt or truncated", {}),
    ("corrupt_bytes_same_size", lambda d: _flip_middle(d / "sensor.npz"), r"sensor\.npz: corrupt or truncated", {}),
    ("timestamps_as_text", lambda d: _actions(d, timestamps=np.array([f"t{i}" for i in range(15)])),
     r"actions\.npz:timestamps: .*numbers", {}),
    ("actions_as_text", lambda d: _actions(d, actions=np.full((15, 7), "x")), r"actions\.npz:actions: .*numbers", {}),
    ("alines_as_text", lambda d: _sensor(d, alines=np.full((len(_sensor_ts(d)), 1025), "x")),
     r"sensor\.npz:alines: .*numbers", {}),
    ("actions_3d", lambda d: _actions(d, actions=np.zeros((15, 7, 2), np.float32)),
     r"actions\.npz:actions: expected shape \(15, A\)", {}),
    ("sensor_timestamps_2d", lambda d: _sensor(d, timestamps=_sensor_ts(d)[:, None]),
     r"sensor\.npz:timestamps: expected a 1-D array", {}),
    ("alines_rows_mismatch", lambda d: _sensor(d, alines=np.zeros((5, 1025), np.float32)),
     r"sensor\.npz:alines: expected shape", {}),
    ("nan_in_sensor", lambda d: _sensor(d, forces=np.where(np.arange(len(_sensor_ts(d))) == 7, np.nan, 0.0)),
     r"sensor\.npz:forces\+alines: NaN/inf value at row 7", {}),
    ("inf_in_actions", lambda d: _actions(d, actions=np.full((15, 7), np.inf, np.float32)),
     r"actions\.npz:actions: NaN/inf value at row 0", {}),
    ("nan_timestamp", lambda d: _actions(d, timestamps=np.r_[0.0, np.nan, np.arange(2, 15) / 10]),
     r"actions\.npz:timestamps: NaN/inf timestamp at index 1", {}),
    ("unsorted_sensor_timestamps", lambda d: _sensor(d, timestamps=_sensor_ts(d)[::-1].copy()),
     r"sensor\.npz:timestamps: non-monotonic timestamps at index 1", {}),
    ("duplicate_action_timestamps", lambda d: _actions(d, timestamps=np.r_[0.0, 0.0, np.arange(2, 15) / 10]),
     r"actions\.npz:timestamps: duplicate timestamps at index 1", {}),
    ("empty_sensor_stream", lambda d: _sensor(d, timestamps=np.zeros(0), forces=np.zeros(0, np.float32),
                                              alines=np.zeros((0, 1025), np.float32)),
     r"sensor\.npz:timestamps: empty sensor stream", {}),
    ("zero_action_steps", lambda d: _actions(d, timestamps=np.zeros(0), actions=np.zeros((0, 7), np.float32)),
     r"actions\.npz: no action steps", {}),
    ("zero_length_window", _gap, r"sensor\.npz: the adaptive sensor window ending at t=0\.\d+ s \(action step \d\) holds no sensor sample",
     {"adaptive_window": True}),
    ("sensor_starts_late", lambda d: _sensor(d, timestamps=_sensor_ts(d) + 0.5),
     r"sensor\.npz: sensor stream covers .* expected the stream to start at or before the first action", {}),
    ("missing_image", lambda d: next((d / "images" / "left").glob("000003.*")).unlink(),
     r"images/left: missing image for step 3", {}),
    ("unreadable_image", lambda d: next((d / "images" / "left").glob("000003.*")).write_bytes(b"not an image"),
     IMG + r"\.\w+: unreadable image", {}),
    ("truncated_image", lambda d: _truncate(next((d / "images" / "left").glob("000003.*"))),
     IMG + r"\.\w+: unreadable image", {}),
    ("unreadable_image_no_cache", lambda d: next((d / "images" / "left").glob("000003.*")).write_bytes(b"\xff\xd8"),
     IMG + r"\.\w+: unreadable image", {"cache": False, "cache_images": False}),
    ("huge_values_float16", lambda d: _sensor(d, forces=np.full(len(_sensor_ts(d)), 1e6, np.float32)),
     r"sensor\.npz.*65504", {"cache_dtype": "float16"}),
    ("huge_values_overflow_float32", lambda d: _sensor(d, forces=np.full(len(_sensor_ts(d)), 1e300)),
     r"sensor\.npz:forces\+alines: NaN/inf value at row 0", {}),
    ("wrong_channel_count", lambda d: _sensor(d, alines=np.zeros((len(_sensor_ts(d)), 1000), np.float32)),
     r"sensor\.npz: wrong channel count 1001 .* expected 1026", {}),
    ("symlink_loop_sensor_file", lambda d: _loop(d / "sensor.npz"), r"sensor\.npz: .*symbolic links", {}),
    ("symlink_loop_view", lambda d: _loop(d / "images" / "left"), r"images/left is a broken symlink or a symlink loop",
     {"view_selection": ["left", "oak"]}),
    ("meta_not_json", lambda d: (d / "meta.json").write_text("{instruction: 1"), r"meta\.json: invalid JSON", {}),
    ("meta_instruction_not_text", lambda d: (d / "meta.json").write_text('{"instruction": 5}'),
     r"meta\.json:instruction: expected a string", {}),
]


@pytest.fixture
def good_traj(tiny_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "traj"
    shutil.copytree(tiny_root / "traj_000", dst)
    return dst


def _read_everything(path: Path, cache_dir: Path, **kw) -> None:
    kw = {"cache_strategy": "mmap", "image_size": (28, 28), **kw}
    ds = InsertionDataset(path, cache_dir=cache_dir, progress=False, sensor_window_size=64, **kw)
    for i in range(len(ds)):
        ds[i]


@pytest.mark.parametrize("name,breaks,message,kw", CASES, ids=[c[0] for c in CASES])
def test_malformed_trajectory_gives_a_clear_error(good_traj: Path, tmp_path: Path, name: str,
                                                  breaks: Callable[[Path], None], message: str, kw: dict) -> None:
    _read_everything(good_traj, tmp_path / "cache_ok", **kw)  # the corpus starts from a good trajectory
    breaks(good_traj)
    with pytest.raises(DataFormatError) as info:
        _read_everything(good_traj, tmp_path / "cache", **kw)
    assert str(good_traj) in str(info.value) and re.search(message, str(info.value)), str(info.value)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 20


def test_trajectory_dir_that_is_a_symlink_loop(tmp_path: Path) -> None:
    _loop_dir = tmp_path / "traj"
    _loop_dir.symlink_to("traj")
    with pytest.raises(DataFormatError, match=r"trajectory directory .*traj is a broken symlink or a symlink loop"):
        InsertionDataset(_loop_dir, cache_dir=tmp_path / "cache", progress=False)


def test_trajectory_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "traj").write_text("")
    with pytest.raises(DataFormatError, match=r"trajectory directory .*traj is not a directory"):
        InsertionDataset(tmp_path / "traj", cache_dir=tmp_path / "cache", progress=False)


def test_os_error_names_survive(tmp_path: Path) -> None:
    """Sanity check of the corpus helper: a loop really is a loop on this file system."""
    p = tmp_path / "x"
    p.symlink_to("x")
    with pytest.raises(OSError):
        os.stat(p)
