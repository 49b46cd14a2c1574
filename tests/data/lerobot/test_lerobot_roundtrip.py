"""Import -> export -> import is exact; export writes what LeRobot reads (info, tasks, episodes, stats)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from lerobot_fixtures import IMAGES_KC, VIDEO_WRENCH, WRENCH_FEATURES

from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import Trajectory, TrajectoryReader
from vla_sensor.data.lerobot import LeRobotReader
from vla_sensor.data.lerobot.__main__ import main
from vla_sensor.data.lerobot.export import ExportSettings, export_dataset
from vla_sensor.data.synthetic import generate_dataset


def _native(root: Path) -> list[Trajectory]:
    reader = TrajectoryReader(expected_channels=None, channel_keys=["forces", "alines"])
    return [reader.read(p) for p in sorted(root.iterdir())]


def _assert_same(a: Trajectory, b: Trajectory) -> None:
    assert a.path.name == b.path.name and a.instruction == b.instruction and a.meta == b.meta
    assert np.array_equal(a.actions, b.actions) and np.array_equal(a.action_timestamps, b.action_timestamps)
    assert np.array_equal(a.sensor_timestamps, b.sensor_timestamps)
    assert np.array_equal(a.load_sensor_stream(), b.load_sensor_stream())
    assert a.images.views == b.images.views
    for view in a.images.views:
        for t in range(a.num_steps):
            assert np.array_equal(a.images.decode(view, t, None), b.images.decode(view, t, None))


def test_import_export_import_is_exact(tmp_path: Path) -> None:
    assert main(["import", str(IMAGES_KC), str(tmp_path / "n1")]) == 0
    assert main(["export", str(tmp_path / "n1"), str(tmp_path / "lr"), "--fps", "10"]) == 0
    assert main(["import", str(tmp_path / "lr"), str(tmp_path / "n2")]) == 0
    first, second = _native(tmp_path / "n1"), _native(tmp_path / "n2")
    assert len(first) == 3
    for a, b in zip(first, second, strict=True):
        _assert_same(a, b)
    # the imported trajectory is the LeRobot episode, and native keys split the 1026 channels
    with np.load(tmp_path / "n1" / "episode_000000" / "sensor.npz") as z:
        assert z["forces"].shape == (195,) and z["alines"].shape == (195, 1025)


def test_exported_metadata_is_lerobot_v30(tmp_path: Path) -> None:
    main(["import", str(IMAGES_KC), str(tmp_path / "n1")])
    export_dataset(tmp_path / "n1", tmp_path / "lr", ExportSettings(fps=10), progress=False)
    ours = json.loads((tmp_path / "lr" / "meta/info.json").read_text())
    theirs = json.loads((IMAGES_KC / "meta/info.json").read_text())
    assert ours["codebase_version"] == "v3.0" and ours["total_frames"] == theirs["total_frames"] == 8
    assert ours["features"]["observation.sensor"]["shape"] == [65, 1026]
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert ours["features"][key] == theirs["features"][key]
    stats = json.loads((tmp_path / "lr" / "meta/stats.json").read_text())
    ref = json.loads((IMAGES_KC / "meta/stats.json").read_text())
    assert set(stats) == set(ref)
    for key in ref:
        assert set(stats[key]) == set(ref[key]), key
        assert np.shape(stats[key]["mean"]) == np.shape(ref[key]["mean"]), key
        for name in ("min", "max", "count"):  # exact statistics agree with lerobot's
            assert np.allclose(stats[key][name], ref[key][name]), (key, name)
        assert np.allclose(stats[key]["mean"], ref[key]["mean"], atol=1e-6), key
    ours_eps = pq.read_schema(tmp_path / "lr" / "meta/episodes/chunk-000/file-000.parquet").names
    theirs_eps = pq.read_schema(IMAGES_KC / "meta/episodes/chunk-000/file-000.parquet").names
    assert set(theirs_eps) <= set(ours_eps)
    assert pq.read_schema(tmp_path / "lr" / "data/chunk-000/file-000.parquet").names == \
        pq.read_schema(IMAGES_KC / "data/chunk-000/file-000.parquet").names


def test_video_and_frame_rate_features_round_trip(tmp_path: Path) -> None:
    """A video dataset imports as PNGs; exported (as parquet images) and imported again it is unchanged."""
    reader_args = ["--sensor-features", *WRENCH_FEATURES]
    assert main(["import", str(VIDEO_WRENCH), str(tmp_path / "n1"), *reader_args]) == 0
    assert main(["export", str(tmp_path / "n1"), str(tmp_path / "lr"), "--channel-keys", "sensor"]) == 0
    assert main(["import", str(tmp_path / "lr"), str(tmp_path / "n2"), "--channel-split", "sensor=14"]) == 0
    reader = TrajectoryReader(expected_channels=None, channel_keys=["sensor"])
    for name in ("episode_000000", "episode_000002"):
        _assert_same(reader.read(tmp_path / "n1" / name), reader.read(tmp_path / "n2" / name))


def test_native_recordings_export_with_video(tmp_path: Path) -> None:
    """Jittered 650 Hz recordings: k = 65 per 10 Hz frame, held samples, frames within the video tolerance."""
    generate_dataset(tmp_path / "native", trajectories=2, seconds=1.0, image_size=32, views=("left",), seed=1)
    export_dataset(tmp_path / "native", tmp_path / "lr", ExportSettings(fps=10, video=True), progress=False)
    reader = LeRobotReader(expected_channels=1026)
    native = TrajectoryReader().read(tmp_path / "native" / "traj_000")
    traj = reader.read(reader.discover(tmp_path / "lr")[0])
    assert traj.num_steps == native.num_steps and np.array_equal(traj.actions, native.actions)
    stream, src = traj.load_sensor_stream(), native.load_sensor_stream()
    rows = np.searchsorted(native.sensor_timestamps, traj.sensor_timestamps + 1e-6, side="right") - 1
    assert np.array_equal(stream, src[np.clip(rows, 0, None)])  # every exported sample is a recorded one
    frames = [traj.images.decode("observation.images.left", t, None) for t in range(traj.num_steps)]
    truth = [native.images.decode("left", t, None) for t in range(traj.num_steps)]
    assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(frames, truth, strict=True)) < 12


def test_export_refuses_an_uneven_action_rate(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "native", trajectories=1, seconds=1.0, image_size=16, views=("left",), seed=2)
    with pytest.raises(DataFormatError, match=r"traj_000: action steps 0 and 1 .* --fps 30"):
        export_dataset(tmp_path / "native", tmp_path / "lr", ExportSettings(fps=30), progress=False)
    assert main(["export", str(tmp_path / "native"), str(tmp_path / "lr2"), "--fps", "30"]) == 2


def test_episodes_spread_over_several_data_files(tmp_path: Path) -> None:
    main(["import", str(IMAGES_KC), str(tmp_path / "n1")])
    export_dataset(tmp_path / "n1", tmp_path / "lr", ExportSettings(fps=10, data_file_mb=1e-6), progress=False)
    assert len(list((tmp_path / "lr" / "data" / "chunk-000").glob("file-*.parquet"))) == 3
    reader = LeRobotReader(expected_channels=1026)
    for a, path in zip(_native(tmp_path / "n1"), reader.discover(tmp_path / "lr"), strict=True):
        b = reader.read(path)
        assert np.array_equal(a.load_sensor_stream(), b.load_sensor_stream()) and np.array_equal(a.actions, b.actions)
