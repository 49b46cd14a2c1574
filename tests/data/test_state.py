"""The proprioceptive state of native recordings: ``states`` in actions.npz -> sample ``state`` -> batch
``state`` (B, S), its training-split statistics, and every way a state array can be wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from vla_sensor.data.build import build_datasets
from vla_sensor.data.collate import collate_samples
from vla_sensor.data.config import DataConfig
from vla_sensor.data.dataset import InsertionDataset
from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.format import TrajectoryReader
from vla_sensor.data.normalization import ActionStats, compute_action_stats

KW = {"sensor_window_size": 32, "image_size": (16, 16), "cache": False, "progress": False}


def _add_states(traj: Path, states: np.ndarray | None = None, key: str = "states", dim: int = 3,
                seed: int = 0) -> np.ndarray:
    """Rewrite ``traj``'s actions.npz with a ``key`` array (default: random (M, dim) float32)."""
    path = traj / "actions.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    if states is None:
        states = np.random.default_rng(seed).normal(size=(arrays["actions"].shape[0], dim)).astype(np.float32)
    arrays[key] = states
    np.savez(path, **arrays)
    return states


@pytest.fixture
def state_dirs(small_dirs: list[Path], tmp_path: Path) -> list[Path]:
    """Private copies of the small trajectories, each with a (M, 3) state."""
    out = []
    for i, d in enumerate(small_dirs):
        dst = tmp_path / d.name
        shutil.copytree(d, dst)
        _add_states(dst, seed=i)
        out.append(dst)
    return out


def test_states_reach_samples_and_batches_in_robot_units(state_dirs: list[Path]) -> None:
    ds = InsertionDataset(state_dirs, **KW)
    assert ds.state_dim == 3
    with np.load(state_dirs[1] / "actions.npz") as npz:
        states = npz["states"]
    k = 1
    first = int(np.flatnonzero(ds.sample_traj == k)[0])
    for t in (0, 4, ds.trajectories[k].num_steps - 1):
        s = ds[first + t]
        assert s["step_index"] == t and s["state"].dtype == torch.float32 and s["state"].shape == (3,)
        np.testing.assert_array_equal(s["state"].numpy(), states[t])  # not normalised: robot units
    batch = collate_samples([ds[i] for i in range(5)])
    assert batch["state"].shape == (5, 3) and batch["state"].dtype == torch.float32
    np.testing.assert_array_equal(batch["state"][2].numpy(), ds[2]["state"].numpy())


def test_data_without_states_has_no_state_key(small_dirs: list[Path]) -> None:
    ds = InsertionDataset(small_dirs, **KW)
    assert ds.state_dim == 0
    assert "state" not in ds[0] and "state" not in collate_samples([ds[0], ds[1]])


def test_one_dimensional_states_are_one_column(traj_copy: Path) -> None:
    m = TrajectoryReader().read(traj_copy).num_steps
    _add_states(traj_copy, np.arange(m, dtype=np.float64))  # any numeric dtype, read as float32
    ds = InsertionDataset(traj_copy, **KW)
    assert ds.state_dim == 1 and ds[3]["state"].tolist() == [3.0]


def test_states_key_is_configurable_and_null_ignores_states(traj_copy: Path) -> None:
    _add_states(traj_copy, key="proprio", dim=2)
    assert TrajectoryReader().read(traj_copy).states is None  # default key "states" is absent
    assert TrajectoryReader(states_key="proprio").read(traj_copy).state_dim == 2
    _add_states(traj_copy, dim=4)
    assert TrajectoryReader(states_key=None).read(traj_copy).states is None
    assert OmegaConf.structured(DataConfig).reader.states_key == "states"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: np.zeros((m - 1, 3), np.float32), r"actions\.npz:states: expected shape \(\d+, S\).*got \(\d+, 3\)"),
        (lambda m: np.zeros((m, 2, 2), np.float32), r"actions\.npz:states: expected shape .* got \(\d+, 2, 2\)"),
        (lambda m: np.zeros((m, 0), np.float32), r"actions\.npz:states: expected shape"),
        (lambda m: np.array(["x"] * m), r"actions\.npz:states: expected numbers .* got dtype <U1"),
        (lambda m: np.where(np.arange(m)[:, None] == 5, np.nan, 0.0) * np.ones((1, 3)),
         r"actions\.npz:states: NaN/inf value at row 5"),
        (lambda m: np.full((m, 3), np.inf), r"actions\.npz:states: NaN/inf value at row 0"),
    ],
    ids=["rows-differ-from-actions", "3-d", "zero-width", "text", "nan", "inf"],
)
def test_bad_states_name_the_file_and_key(traj_copy: Path, make, match: str) -> None:
    m = TrajectoryReader().read(traj_copy).num_steps
    _add_states(traj_copy, make(m))
    with pytest.raises(DataFormatError, match=match):
        InsertionDataset(traj_copy, **KW)


def test_some_trajectories_with_states_and_others_without_is_refused(state_dirs: list[Path]) -> None:
    with np.load(state_dirs[2] / "actions.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "states"}
    np.savez(state_dirs[2] / "actions.npz", **arrays)
    with pytest.raises(DataFormatError, match=rf"{state_dirs[2].name}: no proprioceptive state, but 3 of 4 "
                                              r"trajectories have one .*states in all trajectories or none"):
        InsertionDataset(state_dirs, **KW)


def test_state_sizes_must_agree(state_dirs: list[Path]) -> None:
    _add_states(state_dirs[0], dim=5)
    with pytest.raises(DataFormatError, match=r"state dimension differs between trajectories: 3 \(.*\), 5 \(.*traj_000"):
        InsertionDataset(state_dirs, **KW)


def _build_cfg(root: Path, tmp_path: Path, **kw):
    base = {"root": str(root), "image_size": [16, 16], "sensor_window_size": 32, "progress": False,
            "val_fraction": 0.25, "generate_if_missing": False, "cache": False,
            "cache_strategy": {"cache_dir": str(tmp_path / "cache")}}
    return OmegaConf.merge(OmegaConf.structured(DataConfig), base, kw)


def test_state_statistics_come_from_the_training_split_only(state_dirs: list[Path], tmp_path: Path) -> None:
    train, val, stats = build_datasets(_build_cfg(tmp_path, tmp_path))
    assert val is not None and train.state_dim == val.state_dim == 3
    expected = compute_action_stats([t.states for t in train.trajectories])
    assert stats.state is not None
    np.testing.assert_allclose(stats.state.mean, expected.mean, rtol=1e-6)
    np.testing.assert_allclose(stats.state.q99, expected.q99, rtol=1e-6)
    everything = compute_action_stats([t.states for t in train.trajectories + val.trajectories])
    assert not np.allclose(stats.state.mean, everything.mean)  # the validation trajectory is left out
    assert stats.dim == train.action_dim  # the action statistics are unchanged
    # saved and loaded with the weights as JSON
    back = ActionStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert back.state is not None and back.state.dim == 3
    np.testing.assert_array_equal(back.state.std, stats.state.std)


def test_statistics_without_state_and_old_files_load(small_dirs: list[Path], tmp_path: Path) -> None:
    root = small_dirs[0].parent
    _, _, stats = build_datasets(_build_cfg(root, tmp_path))
    assert stats.state is None and "state" not in stats.to_dict()
    old = {k: v for k, v in stats.to_dict().items()}  # an action_stats.json written before states existed
    assert ActionStats.from_dict(old).state is None
    with pytest.raises(ValueError, match=r"action stats: state: missing fields \['std'"):
        ActionStats.from_dict({**old, "state": {"mean": [0.0]}})
    with pytest.raises(ValueError, match="'state' must be an object"):
        ActionStats.from_dict({**old, "state": [0.0]})


def test_a_training_split_with_state_and_a_validation_split_without_is_refused(
        state_dirs: list[Path], tmp_path: Path) -> None:
    cfg = _build_cfg(tmp_path, tmp_path, val_dirs=[state_dirs[3].name])
    with np.load(state_dirs[3] / "actions.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "states"}
    np.savez(state_dirs[3] / "actions.npz", **arrays)
    with pytest.raises(DataFormatError, match=r"training trajectories have a 3-dim state .* validation ones a 0-dim"):
        build_datasets(cfg)


def test_a_custom_readers_states_get_the_same_checks(traj_copy: Path) -> None:
    class Reader(TrajectoryReader):
        def __init__(self, states) -> None:
            super().__init__()
            self.states = states

        def read(self, path, views=None):
            traj = super().read(path, views)
            traj.states = self.states(traj.num_steps)
            return traj

    assert InsertionDataset(traj_copy, reader=Reader(lambda m: np.ones(m)), **KW).state_dim == 1
    with pytest.raises(DataFormatError, match=r"traj: states: expected shape \(15, S\) .* got \(14, 2\)"):
        InsertionDataset(traj_copy, reader=Reader(lambda m: np.ones((m - 1, 2))), **KW)
