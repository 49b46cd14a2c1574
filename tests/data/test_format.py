"""Every bad input raises DataFormatError naming the file/key and what was expected."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from vla_sensor import DataFormatError, InsertionDataset, TrajectoryReader
from vla_sensor.data.build import make_reader
from vla_sensor.data.config import ReaderConfig, data_config, strategy_settings
from vla_sensor.data.format import TrajectoryReaderProtocol


def _rewrite(path: Path, **changes: np.ndarray | None) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)


def _sensor(traj: Path) -> dict[str, np.ndarray]:
    with np.load(traj / "sensor.npz") as npz:
        return {k: npz[k] for k in npz.files}


def test_reads_the_spec_format(small_dirs: list[Path]) -> None:
    traj = TrajectoryReader().read(small_dirs[1])
    assert traj.action_timestamps.dtype == np.float64 and traj.actions.dtype == np.float32
    assert traj.actions.shape == (15, 7) and list(traj.image_paths) == ["left", "oak"]
    assert traj.sensor_timestamps is not None and traj.num_channels == 1026
    assert traj.sensor_stream is None  # lazy
    assert traj.load_sensor_stream().shape == (traj.sensor_timestamps.shape[0], 1026)
    assert traj.instruction and traj.meta["sensor_rate_hz"] == 650
    assert not TrajectoryReader().read(small_dirs[3]).has_sensor


def test_misspelled_directory_suggests_close_names(small_dirs: list[Path]) -> None:
    with pytest.raises(DataFormatError, match=r"does not exist.*did you mean: traj_001"):
        TrajectoryReader().read(small_dirs[1].parent / "traj_0001")


def test_directory_without_actions(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match=r"empty: no actions file 'actions.npz'"):
        InsertionDataset(tmp_path / "empty", progress=False)


def test_truncated_npz(traj_copy: Path) -> None:
    data = (traj_copy / "sensor.npz").read_bytes()
    (traj_copy / "sensor.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"sensor\.npz: corrupt or truncated"):
        TrajectoryReader().read(traj_copy)
    (traj_copy / "actions.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match=r"actions\.npz: corrupt or truncated"):
        TrajectoryReader().read(traj_copy)


def test_missing_keys(traj_copy: Path) -> None:
    _rewrite(traj_copy / "sensor.npz", alines=None)
    with pytest.raises(DataFormatError, match=r"sensor\.npz: missing key 'alines'"):
        TrajectoryReader().read(traj_copy)
    _rewrite(traj_copy / "actions.npz", actions=None)
    with pytest.raises(DataFormatError, match=r"actions\.npz: missing key 'actions'"):
        TrajectoryReader().read(traj_copy)


def test_wrong_channel_count(traj_copy: Path) -> None:
    s = _sensor(traj_copy)
    _rewrite(traj_copy / "sensor.npz", alines=s["alines"][:, :1000])
    with pytest.raises(DataFormatError, match=r"wrong channel count 1001.*expected 1026"):
        TrajectoryReader().read(traj_copy)
    assert TrajectoryReader(expected_channels=None).read(traj_copy).num_channels == 1001


def test_nan_in_sensor_fails_at_dataset_construction(traj_copy: Path, cache_dir: Path) -> None:
    s = _sensor(traj_copy)
    s["alines"][7, 3] = np.nan
    _rewrite(traj_copy / "sensor.npz", alines=s["alines"])
    for strategy in ["none", "stream", "mmap", "windows"]:
        with pytest.raises(DataFormatError, match=r"sensor\.npz.*NaN/inf value at row 7"):
            InsertionDataset(traj_copy, **strategy_settings(strategy), cache_dir=cache_dir, progress=False,
                             sensor_window_size=16)


def test_inf_in_actions(traj_copy: Path) -> None:
    with np.load(traj_copy / "actions.npz") as npz:
        a = npz["actions"].copy()
    a[2, 1] = np.inf
    _rewrite(traj_copy / "actions.npz", actions=a)
    with pytest.raises(DataFormatError, match=r"actions\.npz:actions: NaN/inf value at row 2"):
        TrajectoryReader().read(traj_copy)


@pytest.mark.parametrize("kind", ["non-monotonic", "duplicate"])
def test_bad_timestamps(traj_copy: Path, kind: str) -> None:
    ts = _sensor(traj_copy)["timestamps"].copy()
    ts[50] = ts[49] if kind == "duplicate" else ts[48]
    _rewrite(traj_copy / "sensor.npz", timestamps=ts)
    with pytest.raises(DataFormatError, match=rf"sensor\.npz:timestamps: {kind} timestamps at index 50"):
        TrajectoryReader().read(traj_copy)


def test_sensor_not_covering_the_trajectory(traj_copy: Path) -> None:
    s = _sensor(traj_copy)
    half = len(s["timestamps"]) // 2
    _rewrite(traj_copy / "sensor.npz", **{k: v[:half] for k, v in s.items()})
    with pytest.raises(DataFormatError, match=r"sensor\.npz: sensor stream covers .* expected the stream"):
        TrajectoryReader().read(traj_copy)


def test_missing_image(traj_copy: Path) -> None:
    (traj_copy / "images" / "oak" / "000004.jpg").unlink()
    with pytest.raises(DataFormatError, match=r"oak: missing image for step 4; expected 000004\.jpg"):
        TrajectoryReader().read(traj_copy)


def test_unknown_view_lists_the_available_ones(small_dirs: list[Path]) -> None:
    with pytest.raises(DataFormatError, match=r"unknown view 'ok'.*\['left', 'oak'\].*did you mean: oak"):
        InsertionDataset(small_dirs[0], view_selection=["left", "ok"], progress=False)


def test_custom_reader_plugs_in_through_hydra_target(tmp_path: Path, small_dirs: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_reader.py").write_text(textwrap.dedent("""
        import numpy as np
        from vla_sensor.data.format import Trajectory, TrajectoryReader

        class MyReader:
            '''Stores the stream under other keys: reuses the default reader and keeps it in memory.'''
            def __init__(self, gain=1.0, **kwargs):
                self.expected_channels = None
                self.gain = gain
                self._inner = TrajectoryReader(**kwargs)

            def read(self, path, views=None):
                t = self._inner.read(path, views)
                if t.has_sensor:
                    t.sensor_stream = t.load_sensor_stream() * self.gain
                    t.sensor_loader, t.sensor_files = None, ()
                return t
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = data_config(reader=OmegaConf.merge(OmegaConf.structured(ReaderConfig), {"_target_": "my_reader.MyReader"}))
    reader = make_reader(cfg)
    assert isinstance(reader, TrajectoryReaderProtocol)
    ds = InsertionDataset(small_dirs[1], reader=reader, cache_strategy="stream", sensor_window_size=32,
                          progress=False)
    ref = InsertionDataset(small_dirs[1], cache_strategy="stream", sensor_window_size=32, progress=False)
    np.testing.assert_array_equal(ds.sensor_window(9)[0], ref.sensor_window(9)[0])
    sys.modules.pop("my_reader", None)
