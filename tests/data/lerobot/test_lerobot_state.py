"""The robot state of LeRobot datasets: ``data.lerobot.state_feature`` read into ``states``, export writes
``observation.state``, import writes native ``states``, and the bad cases name the feature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lerobot_fixtures import IMAGES_KC, VIDEO_WRENCH, WRENCH_FEATURES, arrays
from omegaconf import OmegaConf

from vla_sensor.data.config import DataConfig
from vla_sensor.data.dataset import InsertionDataset
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import TrajectoryReader
from vla_sensor.data.lerobot import LeRobotReader
from vla_sensor.data.lerobot.__main__ import main
from vla_sensor.data.lerobot.export import export_dataset

KC = {"sensor_features": ["observation.sensor"], "expected_channels": 1026}


def test_default_reads_no_state_from_a_dataset_without_one() -> None:
    assert OmegaConf.structured(DataConfig).lerobot.state_feature == "observation.state"
    reader = LeRobotReader(**KC)
    ds = InsertionDataset(reader.discover(IMAGES_KC), reader=reader, horizon=2, sensor_window_size=20,
                          image_size=(24, 32), cache=False, progress=False)
    assert ds.state_dim == 0 and "state" not in ds[0]


def test_a_named_state_feature_is_read_per_frame() -> None:
    ref = arrays("video_wrench")
    reader = LeRobotReader(sensor_features=["observation.oct"], state_feature="observation.wrench")
    paths = reader.discover(VIDEO_WRENCH)
    for e, path in enumerate(paths):
        traj = reader.read(path)
        assert traj.states is not None and traj.states.dtype == np.float32
        np.testing.assert_array_equal(traj.states, ref[f"observation.wrench/{e}"])
    assert LeRobotReader(sensor_features=WRENCH_FEATURES, state_feature=None).read(paths[0]).states is None


def test_an_absent_state_feature_lists_the_available_ones() -> None:
    reader = LeRobotReader(**KC, state_feature="observation.joints")
    with pytest.raises(DataFormatError, match=r"info\.json: state feature 'observation\.joints' is absent; "
                                              r"available features: \['action', .*'observation\.sensor'"):
        reader.read(reader.discover(IMAGES_KC)[0])


def test_a_state_feature_must_be_one_vector_per_frame() -> None:
    reader = LeRobotReader(sensor_features=["observation.wrench"], state_feature="observation.oct")
    with pytest.raises(DataFormatError, match=r"features\.observation\.oct: shape \(13, 8\); expected \(S,\)"):
        reader.read(reader.discover(VIDEO_WRENCH)[0])


def test_export_writes_observation_state_and_import_reads_it_back(tmp_path: Path) -> None:
    assert main(["import", str(IMAGES_KC), str(tmp_path / "n1")]) == 0
    native = sorted((tmp_path / "n1").iterdir())
    written = {}
    for i, d in enumerate(native):  # give the recordings a (M, 3) state
        with np.load(d / "actions.npz") as npz:
            arrays_ = dict(npz)
        arrays_["states"] = np.random.default_rng(i).normal(size=(arrays_["actions"].shape[0], 3)).astype(np.float32)
        np.savez(d / "actions.npz", **arrays_)
        written[d.name] = arrays_["states"]
    assert main(["export", str(tmp_path / "n1"), str(tmp_path / "lr"), "--fps", "10"]) == 0
    info = json.loads((tmp_path / "lr" / "meta/info.json").read_text())
    assert info["features"]["observation.state"] == {"dtype": "float32", "shape": [3],
                                                     "names": ["state_0", "state_1", "state_2"]}
    stats = json.loads((tmp_path / "lr" / "meta/stats.json").read_text())
    assert len(stats["observation.state"]["mean"]) == 3
    reader = LeRobotReader(**KC)  # the default state_feature finds it
    for path, d in zip(reader.discover(tmp_path / "lr"), native, strict=True):
        np.testing.assert_array_equal(reader.read(path).states, written[d.name])
    ds = InsertionDataset(reader.discover(tmp_path / "lr"), reader=reader, horizon=2, sensor_window_size=20,
                          image_size=(24, 32), cache=False, progress=False)
    assert ds.state_dim == 3
    np.testing.assert_array_equal(ds[1]["state"].numpy(), written[native[0].name][1])
    assert main(["import", str(tmp_path / "lr"), str(tmp_path / "n2")]) == 0
    for d in native:
        back = TrajectoryReader(expected_channels=None).read(tmp_path / "n2" / d.name)
        np.testing.assert_array_equal(back.states, written[d.name])
    # recordings with and without a state cannot share one LeRobot feature
    with np.load(native[1] / "actions.npz") as npz:
        np.savez(native[1] / "actions.npz", **{k: npz[k] for k in npz.files if k != "states"})
    with pytest.raises(DataFormatError, match=rf"{native[1].name}: a 0-dim state \(0: none\), the first trajectory "
                                              r"has a 3-dim one"):
        export_dataset(tmp_path / "n1", tmp_path / "lr2", progress=False)
