"""Every bad LeRobot input raises DataFormatError naming the file and the feature at fault."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lerobot_fixtures import WRENCH_FEATURES

from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.lerobot import LeRobotReader

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
VIDEO = "videos/observation.images.top/chunk-000/file-000.mp4"


def _rewrite(path: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    table = pq.read_table(path)
    pq.write_table(edit(table).replace_schema_metadata(table.schema.metadata), path)


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _edit_info(root: Path, edit: Callable[[dict], None]) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    edit(info)
    (root / "meta/info.json").write_text(json.dumps(info))


def _read_all(reader: LeRobotReader, root: Path) -> None:
    for path in reader.discover(root):
        reader.read(path).load_sensor_stream()


def test_missing_info_json(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    (kc_copy / "meta/info.json").unlink()
    with pytest.raises(DataFormatError, match=r"images_kc/meta/info.json: missing"):
        kc_reader.discover(kc_copy)


def test_v21_dataset_says_how_to_convert(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    _edit_info(kc_copy, lambda info: info.update(codebase_version="v2.1"))
    with pytest.raises(DataFormatError, match=r"info.json:codebase_version: 'v2.1' is not supported.*convert"):
        kc_reader.discover(kc_copy)


def test_absent_feature_lists_the_available_ones(kc_copy: Path) -> None:
    reader = LeRobotReader(sensor_features=["observation.sensors"])
    with pytest.raises(DataFormatError, match=r"info.json: sensor feature 'observation.sensors' is absent; "
                                              r"available features: \[.*'observation.sensor'.*did you mean"):
        reader.read(reader.discover(kc_copy)[0])


def test_absent_view_lists_the_image_features(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    with pytest.raises(DataFormatError, match=r"unknown view 'top'; available image features: \['observation"):
        kc_reader.read(kc_reader.discover(kc_copy)[0], views=["top"])


def test_sensor_shape_mismatch(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    _edit_info(kc_copy, lambda info: info["features"]["observation.sensor"].update(shape=[64, 1026]))
    traj = kc_reader.read(kc_reader.discover(kc_copy)[0])
    with pytest.raises(DataFormatError, match=r"file-000.parquet:observation.sensor .*65 values along axis 0.*"
                                              r"\(64, 1026\)"):
        traj.load_sensor_stream()


def test_channel_count_mismatch(kc_copy: Path) -> None:
    reader = LeRobotReader(expected_channels=1025)
    with pytest.raises(DataFormatError, match=r"info.json: sensor features give 1026 channels.*expected 1025"):
        reader.read(reader.discover(kc_copy)[0])


def test_action_shape_and_dtype_mismatch(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    _edit_info(kc_copy, lambda info: info["features"]["action"].update(shape=[6]))
    with pytest.raises(DataFormatError, match=r"file-000.parquet:action: 21 values in 3 frames; expected shape \(6,\)"):
        kc_reader.read(kc_reader.discover(kc_copy)[0])
    _edit_info(kc_copy, lambda info: info["features"]["action"].update(shape=[7], dtype="string"))
    with pytest.raises(DataFormatError, match=r"features.action: dtype 'string' is not numeric"):
        kc_reader.read(kc_reader.discover(kc_copy)[0])


def test_episode_index_out_of_bounds(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    with pytest.raises(DataFormatError, match=r"episode index 7 out of bounds; the dataset has 3 episodes \(0..2\)"):
        kc_reader.read(kc_copy / "episode_000007")


def test_row_range_out_of_bounds(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    def shift(table: pa.Table) -> pa.Table:
        table = _set_column(table, "dataset_from_index", pa.array([0, 3, 6], pa.int64()))
        return _set_column(table, "dataset_to_index", pa.array([3, 5, 9], pa.int64()))

    _rewrite(kc_copy / EPISODES, shift)
    with pytest.raises(DataFormatError, match=r"file-000.parquet: episode 2: row range 6..9 out of bounds; "
                                              r"the file holds frames 0..8"):
        kc_reader.read(kc_reader.discover(kc_copy)[2])


def test_truncated_parquet(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    data = (kc_copy / DATA).read_bytes()
    (kc_copy / DATA).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"data/chunk-000/file-000.parquet: corrupt or truncated parquet"):
        kc_reader.read(kc_reader.discover(kc_copy)[0])


def test_missing_video_file(video_copy: Path) -> None:
    (video_copy / VIDEO).unlink()
    reader = LeRobotReader(sensor_features=WRENCH_FEATURES)
    with pytest.raises(DataFormatError, match=r"file-000.mp4: missing video file of episode 0, "
                                              r"feature 'observation.images.top'"):
        reader.read(reader.discover(video_copy)[0])


def test_video_shorter_than_its_episode(video_copy: Path) -> None:
    def later(table: pa.Table) -> pa.Table:
        for col in ("from_timestamp", "to_timestamp"):
            name = f"videos/observation.images.top/{col}"
            table = _set_column(table, name, pa.compute.add(table.column(name), 1.0))
        return table

    _rewrite(video_copy / EPISODES, later)
    reader = LeRobotReader(sensor_features=WRENCH_FEATURES)
    with pytest.raises(DataFormatError, match=r"file-000.mp4: episode 2, feature 'observation.images.top': the video "
                                              r"ends at .* the video is shorter than its episode"):
        reader.read(reader.discover(video_copy)[2])


def _with_nan(table: pa.Table, name: str, row: int) -> pa.Table:
    """``name`` with a NaN in frame ``row`` (a fixed-size list, or LeRobot's nested lists for (k, C))."""
    col = table.column(name).combine_chunks()
    storage = col.storage if isinstance(col, pa.ExtensionArray) else col
    if pa.types.is_fixed_size_list(storage.type):
        flat = storage.flatten().to_numpy().copy()
        flat[row * storage.type.list_size] = np.nan
        return _set_column(table, name, pa.FixedSizeListArray.from_arrays(pa.array(flat), storage.type.list_size))
    inner = storage.flatten()
    flat = inner.flatten().to_numpy().copy()
    flat[row * (len(flat) // len(storage))] = np.nan
    rows = pa.ListArray.from_arrays(inner.offsets, pa.array(flat))
    return _set_column(table, name, pa.ListArray.from_arrays(storage.offsets, rows))


def test_nan_in_actions(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    _rewrite(kc_copy / DATA, lambda t: _with_nan(t, "action", 4))
    with pytest.raises(DataFormatError, match=r"file-000.parquet:action \(episode 1\): NaN/inf value at row 1"):
        _read_all(kc_reader, kc_copy)


def test_nan_in_sensor_feature(kc_copy: Path, kc_reader: LeRobotReader) -> None:
    _rewrite(kc_copy / DATA, lambda t: _with_nan(t, "observation.sensor", 6))
    with pytest.raises(DataFormatError, match=r"file-000.parquet:observation.sensor \(episode 2\): NaN/inf value"):
        _read_all(kc_reader, kc_copy)
