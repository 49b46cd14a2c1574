"""Datasets written by the lerobot package read back exactly as the arrays they were made from."""

from __future__ import annotations

import numpy as np
from lerobot_fixtures import IMAGES_KC, VIDEO_WRENCH, arrays

from vla_sensor.data.lerobot import LeRobotConfig, LeRobotReader
from vla_sensor.data.lerobot.stream import stream_timestamps

# AV1 at crf 30 with 4:2:0 chroma (LeRobot's defaults) on 32x48 noisy frames: mean |error| per frame
VIDEO_MEAN_ABS_TOLERANCE = 12.0


def test_discover_names_episodes_and_config_defaults_match_the_reader(kc_reader: LeRobotReader) -> None:
    paths = kc_reader.discover(IMAGES_KC)
    assert [p.name for p in paths] == ["episode_000000", "episode_000001", "episode_000002"]
    assert all(p.parent == IMAGES_KC for p in paths)
    defaults = LeRobotReader(**vars(LeRobotConfig()))
    assert defaults.sensor_features == ["observation.sensor"] and defaults.expected_channels is None


def test_parquet_fixture_reads_exactly(kc_reader: LeRobotReader) -> None:
    ref = arrays("images_kc")
    for e, path in enumerate(kc_reader.discover(IMAGES_KC)):
        traj = kc_reader.read(path)
        m = len(ref[f"action/{e}"])
        assert np.array_equal(traj.actions, ref[f"action/{e}"])
        assert np.allclose(traj.action_timestamps, np.arange(m) / 10, atol=1e-6)
        assert traj.instruction == str(ref[f"task/{e}"])
        assert traj.images.views == ["observation.images.top", "observation.images.wrist"]
        for view in traj.images.views:
            decoded = np.stack([traj.images.decode(view, t, None) for t in range(m)])
            assert np.array_equal(decoded, ref[f"{view}/{e}"]), view  # PNG in parquet: bit-exact
        stream = traj.load_sensor_stream()
        assert stream.shape == (m * 65, 1026) and traj.num_channels == 1026
        assert np.array_equal(stream, ref[f"observation.sensor/{e}"].reshape(-1, 1026))
        assert np.array_equal(traj.sensor_timestamps, stream_timestamps(traj.action_timestamps, 65, 10.0))


def test_two_tasks_alternate(kc_reader: LeRobotReader) -> None:
    tasks = [kc_reader.read(p).instruction for p in kc_reader.discover(IMAGES_KC)]
    assert tasks[0] == tasks[2] != tasks[1]


def test_kc_timestamps_end_at_each_frame() -> None:
    """Sample j of frame i is at t_i - (k-1-j)/(k·fps): the last one at the frame's own time."""
    ts = stream_timestamps(np.array([0.0, 0.1]), 65, 10.0)
    assert ts[64] == 0.0 and ts[129] == 0.1
    assert np.allclose(np.diff(ts), 1 / 650)


def test_video_fixture_within_tolerance_and_aligned(wrench_reader: LeRobotReader) -> None:
    ref = arrays("video_wrench")
    view = "observation.images.top"
    for e, path in enumerate(wrench_reader.discover(VIDEO_WRENCH)):
        traj = wrench_reader.read(path)
        truth = ref[f"{view}/{e}"].astype(np.int16)
        decoded = np.stack([traj.images.decode(view, t, None) for t in range(traj.num_steps)]).astype(np.int16)
        assert decoded.shape == truth.shape
        err = np.abs(decoded - truth).mean(axis=(1, 2, 3))
        assert err.max() < VIDEO_MEAN_ABS_TOLERANCE, err
        for t in range(1, traj.num_steps):  # each frame is its own step, not a neighbour
            assert err[t] < np.abs(decoded[t] - truth[t - 1]).mean()
        # random access (seek backwards) gives the same frame as sequential decoding
        assert np.array_equal(traj.images.decode(view, 1, None), decoded[1].astype(np.uint8))


def test_frame_rate_and_kc_features_concatenate(wrench_reader: LeRobotReader) -> None:
    ref = arrays("video_wrench")
    traj = wrench_reader.read(wrench_reader.discover(VIDEO_WRENCH)[0])
    stream = traj.load_sensor_stream()
    m = traj.num_steps
    assert stream.shape == (m * 13, 6 + 8)
    assert np.array_equal(stream[:, 6:], ref["observation.oct/0"].reshape(-1, 8))
    # the 10 Hz wrench is held: a 130 Hz sample takes the latest wrench frame at or before it
    wrench = ref["observation.wrench/0"]
    held = stream[:, :6].reshape(m, 13, 6)
    assert np.array_equal(held[:, -1], wrench)  # at the frame's own time: that frame's value
    assert np.array_equal(held[1:, :-1], np.repeat(wrench[:-1, None], 12, axis=1))  # before it: the previous one
    assert np.array_equal(held[0, :-1], np.repeat(wrench[:1], 12, axis=0))  # before the first: the first


def test_frame_rate_feature_alone_is_a_frame_rate_stream() -> None:
    reader = LeRobotReader(sensor_features=["observation.wrench"])
    traj = reader.read(reader.discover(VIDEO_WRENCH)[1])
    assert np.array_equal(traj.sensor_timestamps, traj.action_timestamps)
    assert np.array_equal(traj.load_sensor_stream(), arrays("video_wrench")["observation.wrench/1"])


def test_no_sensor_features_and_view_subset() -> None:
    reader = LeRobotReader(sensor_features=[])
    traj = reader.read(reader.discover(IMAGES_KC)[0], views=["observation.images.wrist"])
    assert not traj.has_sensor and traj.images.views == ["observation.images.wrist"]


def test_sensor_fingerprint_differs_per_episode(kc_reader: LeRobotReader) -> None:
    a, b = (kc_reader.read(p) for p in kc_reader.discover(IMAGES_KC)[:2])
    assert a.sensor_files == b.sensor_files and a.sensor_fingerprint != b.sensor_fingerprint
    assert a.images.fingerprint("observation.images.top") != b.images.fingerprint("observation.images.top")
