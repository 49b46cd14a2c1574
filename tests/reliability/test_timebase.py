"""Timestamps in another unit are refused at dataset construction, naming the file, both rates or spans
and the likely unit; recordings on one clock in seconds (jittered, with dropped samples) still load."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from vla_sensor.data.dataset import InsertionDataset
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import TrajectoryReader


@pytest.fixture()
def traj(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of one 650 Hz trajectory (meta.json: sensor_rate_hz 650, action_rate_hz 10)."""
    src = sorted(p for p in tiny_root.iterdir() if (p / "sensor.npz").is_file())[0]
    return Path(shutil.copytree(src, tmp_path / "traj"))


def _scale(path: Path, factor: float, keep: np.ndarray | None = None) -> None:
    """Multiply an NPZ's ``timestamps`` by ``factor`` (optionally keeping only rows ``keep``)."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if keep is not None:
        arrays = {k: v[keep] for k, v in arrays.items()}
    arrays["timestamps"] = arrays["timestamps"] * factor
    np.savez(path, **arrays)


def _meta(d: Path, **changes: object) -> None:
    meta = json.loads((d / "meta.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (d / "meta.json").write_text(json.dumps(meta))


def _error(d: Path) -> str:
    with pytest.raises(DataFormatError) as info:
        TrajectoryReader().read(d)
    return str(info.value)


@pytest.mark.parametrize(("factor", "unit"), [(1e3, "milliseconds"), (1e6, "microseconds")])
def test_sensor_timestamps_in_another_unit_against_meta_rate(traj: Path, factor: float, unit: str) -> None:
    _scale(traj / "sensor.npz", factor)  # the actions stay in seconds
    msg = _error(traj)
    assert str(traj / "sensor.npz") in msg and str(traj / "meta.json") in msg, msg
    assert "sensor_rate_hz=650 Hz" in msg and re.search(r"0\.65\b|0\.00065", msg), msg
    assert f"look like {unit}" in msg, msg


@pytest.mark.parametrize(("factor", "unit"), [(1e3, "milliseconds"), (1e6, "microseconds"), (1e9, "nanoseconds")])
def test_sensor_timestamps_in_another_unit_without_meta_rate(traj: Path, factor: float, unit: str) -> None:
    """No rate in meta.json: the sensor's span, ~factor times the actions', gives the unit away."""
    _meta(traj, sensor_rate_hz=None, action_rate_hz=None)
    _scale(traj / "sensor.npz", factor)
    msg = _error(traj)
    assert str(traj / "sensor.npz") in msg and str(traj / "actions.npz") in msg, msg
    assert f"{traj / 'sensor.npz'}:timestamps look like {unit}" in msg, msg
    assert re.search(r"stream spans [\d.e+]+ \(0 to .* spans 1\.4 \(0 to 1\.4\)", msg), msg  # both spans


def test_action_timestamps_in_milliseconds(traj: Path) -> None:
    """Actions in ms, sensor in seconds: named as the actions' unit, not as a coverage gap."""
    _meta(traj, sensor_rate_hz=None, action_rate_hz=None)
    _scale(traj / "actions.npz", 1e3)
    msg = _error(traj)
    assert f"{traj / 'actions.npz'}:timestamps look like milliseconds" in msg, msg


def test_both_files_in_milliseconds(traj: Path) -> None:
    """One clock but the wrong unit: only the rates in meta.json can tell; they do."""
    _scale(traj / "sensor.npz", 1e3)
    _scale(traj / "actions.npz", 1e3)
    msg = _error(traj)
    assert str(traj / "sensor.npz") in msg and "sensor_rate_hz=650 Hz" in msg, msg
    assert "look like milliseconds" in msg, msg
    _meta(traj, sensor_rate_hz=None)  # the actions' rate gives it away too
    msg = _error(traj)
    assert str(traj / "actions.npz") in msg and "action_rate_hz=10 Hz" in msg and "milliseconds" in msg, msg


@pytest.mark.parametrize("stated", [1000.0, 325.0, 65.0])
def test_wrong_rate_in_meta(traj: Path, stated: float) -> None:
    _meta(traj, sensor_rate_hz=stated)
    msg = _error(traj)
    assert str(traj / "meta.json") in msg and f"sensor_rate_hz={stated:g} Hz" in msg, msg
    assert re.search(r"rate of 6[45]\d\.?\d* Hz", msg), msg  # the measured rate
    assert "correct sensor_rate_hz" in msg, msg


def test_rate_in_meta_not_a_number(traj: Path) -> None:
    _meta(traj, sensor_rate_hz="fast")
    msg = _error(traj)
    assert f"{traj / 'meta.json'}:sensor_rate_hz: expected a number of Hz" in msg, msg


def test_one_clock_in_seconds_still_loads(traj: Path) -> None:
    """Jitter (the generator's), 20 % of the samples dropped, and an offset clock are all fine."""
    TrajectoryReader().read(traj)
    rng = np.random.default_rng(0)
    with np.load(traj / "sensor.npz") as npz:
        n = len(npz["timestamps"])
    keep = np.sort(np.r_[0, rng.choice(np.arange(1, n - 1), int(0.8 * n), replace=False), n - 1])
    _scale(traj / "sensor.npz", 1.0, keep=keep)
    got = TrajectoryReader().read(traj)
    assert got.sensor_timestamps.shape[0] == keep.size


def test_refused_at_dataset_construction(traj: Path) -> None:
    """Before any cache is built or any window is cut."""
    _scale(traj / "sensor.npz", 1e3)
    with pytest.raises(DataFormatError, match="look like milliseconds"):
        InsertionDataset([traj], cache=False)


@pytest.mark.parametrize("factor", [1e3, 1e-3])
def test_lerobot_frame_timestamps_against_fps(tmp_path: Path, factor: float) -> None:
    """LeRobot: the sensor's times derive from the frames', so the frames are checked against info.json's fps."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vla_sensor.data.lerobot import LeRobotReader

    root = Path(shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures/lerobot/images_kc", tmp_path / "kc"))
    data = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data)
    i = table.schema.get_field_index("timestamp")
    scaled = pa.array(table.column("timestamp").to_numpy() * factor, type=table.schema.field(i).type)
    pq.write_table(table.set_column(i, "timestamp", scaled).replace_schema_metadata(table.schema.metadata), data)
    reader = LeRobotReader(sensor_features=["observation.sensor"], expected_channels=1026)
    with pytest.raises(DataFormatError) as info:
        reader.read(reader.discover(root)[0])
    msg = str(info.value)
    assert str(data) in msg and str(root / "meta/info.json") in msg and "fps=" in msg, msg
    assert ("look like milliseconds" in msg) == (factor > 1), msg
