"""The recorder writes the project's trajectory format, deterministically per seed."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest

from vla_sensor.data.format import TrajectoryReader
from vla_sensor.sim.record import main, record


def test_recordings_are_read_by_the_trajectory_reader(recording):
    dirs = sorted(p for p in recording.iterdir() if p.is_dir())
    assert [p.name for p in dirs] == [f"episode_{i:06d}" for i in range(3)]
    for d in dirs:
        traj = TrajectoryReader().read(d)
        assert traj.actions.shape == (60, 3)
        assert np.allclose(traj.action_timestamps, np.arange(60) / 10)
        assert traj.num_channels == 1026
        assert traj.sensor_timestamps.shape == (3901,) and traj.sensor_timestamps[-1] == pytest.approx(6.0)
        stream = traj.load_sensor_stream()
        assert stream.shape == (3901, 1026)
        assert {len(v) for v in traj.image_paths.values()} == {60}
        assert set(traj.image_paths) == {"left", "oak"}
        meta = json.loads((d / "meta.json").read_text())
        assert meta["success"] is True  # the expert
        assert set(meta["sim"]["params"]) == {"surface_mm", "stiffness_n_per_m", "target_x_mm", "target_y_mm"}
        assert traj.instruction == meta["instruction"]
        # the recorded actions, summed, bring the tip to the target depth below the hidden surface
        final_z = 10.0 + traj.actions[:, 2].sum()
        assert meta["sim"]["params"]["surface_mm"] - final_z == pytest.approx(2.0, abs=0.3)
        # the tip position where each action was chosen: the state before the step, as the images
        assert traj.states.shape == (60, 3) and meta["state_names"] == ["tip_x_mm", "tip_y_mm", "tip_z_mm"]
        np.testing.assert_allclose(traj.states[0, 2], 10.0, atol=0.05)
        np.testing.assert_allclose(np.diff(traj.states[:, :2], axis=0), traj.actions[:-1, :2], atol=0.05)


def test_an_insertion_dataset_builds_on_recordings(recording, tmp_path, monkeypatch):
    from vla_sensor.data.dataset import InsertionDataset

    monkeypatch.setenv("VLA_SENSOR_CACHE_DIR", str(tmp_path / "cache"))
    dirs = sorted(p for p in recording.iterdir() if p.is_dir())
    ds = InsertionDataset(dirs)
    assert len(ds) == 60 * 3
    sample = ds[10]
    assert sample["actions"].shape[-1] == 3
    assert sample["sensor_data"].shape[-1] == 1026
    assert sample["images"].shape[0] == 2  # left, oak
    assert ds.state_dim == 3 and sample["state"].shape == (3,)


def test_same_seed_gives_identical_files(recording, recording_seed, tmp_path):
    again = tmp_path / "b"
    record(again, 2, seed=recording_seed, progress=False)
    for i in range(2):
        name = f"episode_{i:06d}"
        cmp = filecmp.dircmp(recording / name, again / name)
        assert not cmp.left_only and not cmp.right_only
        for f in ("actions.npz", "sensor.npz", "meta.json"):
            assert filecmp.cmp(recording / name / f, again / name / f, shallow=False), f
        for view in ("left", "oak"):
            a, b = recording / name / "images" / view, again / name / "images" / view
            _, mismatch, errors = filecmp.cmpfiles(a, b, sorted(p.name for p in a.iterdir()), shallow=False)
            assert not mismatch and not errors
    other = tmp_path / "c"
    record(other, 1, seed=recording_seed + 1, progress=False, views=("left",), seconds=1.0)
    assert not filecmp.cmp(recording / "episode_000000" / "actions.npz", other / "episode_000000" / "actions.npz",
                           shallow=False)


def test_cli_writes_episodes_with_the_chosen_views_and_size(gl_ok, tmp_path, capsys):
    main([str(tmp_path / "cli"), "--episodes", "1", "--seed", "1", "--views", "oak", "--image-size", "32",
          "--seconds", "1", "--no-progress"])
    assert "wrote 1 episodes" in capsys.readouterr().out
    traj = TrajectoryReader().read(tmp_path / "cli" / "episode_000000")
    assert list(traj.image_paths) == ["oak"] and traj.num_steps == 10
    from PIL import Image

    assert Image.open(traj.image_paths["oak"][0]).size == (32, 32)


def test_recording_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="episodes"):
        record(tmp_path, 0, progress=False, views=())


def test_target_range_zero_is_a_depth_only_task(tmp_path):
    """``--target-range 0``: the target at the origin; surface and stiffness drawn as with the default."""
    main([str(tmp_path / "fixed"), "--episodes", "2", "--seed", "3", "--views", "oak", "--image-size", "16",
          "--seconds", "0.5", "--target-range", "0", "--no-progress"])
    main([str(tmp_path / "free"), "--episodes", "2", "--seed", "3", "--views", "oak", "--image-size", "16",
          "--seconds", "0.5", "--no-progress"])
    for i in range(2):
        fixed = json.loads((tmp_path / "fixed" / f"episode_{i:06d}" / "meta.json").read_text())["sim"]["params"]
        free = json.loads((tmp_path / "free" / f"episode_{i:06d}" / "meta.json").read_text())["sim"]["params"]
        assert fixed["target_x_mm"] == fixed["target_y_mm"] == 0.0 and free["target_x_mm"] != 0.0
        assert fixed["surface_mm"] == free["surface_mm"] and fixed["stiffness_n_per_m"] == free["stiffness_n_per_m"]
    with pytest.raises(ValueError, match="target range"):
        record(tmp_path / "bad", 1, progress=False, views=(), target_range_mm=-1.0)


def test_lateral_noise_executes_noisy_actions_and_records_the_experts(tmp_path):
    """``--lateral-noise``: the tip wanders off the recorded actions; the recorded actions stay the
    expert's (within its lateral speed limit), and the recording stays a function of the seed."""
    args = ["--episodes", "1", "--seed", "4", "--views", "oak", "--image-size", "16", "--seconds", "1.0", "--no-progress"]
    main([str(tmp_path / "clean"), *args])
    main([str(tmp_path / "noisy"), *args, "--lateral-noise", "0.3"])
    main([str(tmp_path / "again"), *args, "--lateral-noise", "0.3"])
    clean = TrajectoryReader().read(tmp_path / "clean" / "episode_000000")
    noisy = TrajectoryReader().read(tmp_path / "noisy" / "episode_000000")
    moved = np.diff(noisy.states[:, :2], axis=0) - noisy.actions[:-1, :2]
    assert np.abs(moved).max() > 0.1  # executed = recorded + noise
    np.testing.assert_allclose(np.diff(clean.states[:, :2], axis=0), clean.actions[:-1, :2], atol=0.05)
    assert np.abs(noisy.actions[:, :2]).max() <= 0.2 + 1e-6  # the expert's own, speed-limited actions
    meta = json.loads((tmp_path / "noisy" / "episode_000000" / "meta.json").read_text())
    assert meta["sim"]["lateral_noise_mm"] == 0.3
    assert filecmp.cmp(tmp_path / "noisy" / "episode_000000" / "actions.npz",
                       tmp_path / "again" / "episode_000000" / "actions.npz", shallow=False)
    with pytest.raises(ValueError, match="lateral noise"):
        record(tmp_path / "bad", 1, progress=False, views=(), lateral_noise_mm=-0.1)
