"""The served pre-processing in reused buffers: the same batch as the dataset's path, and nothing of a
reused buffer leaks into what a caller keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.serving.conftest import observation_stream
from vla_sensor.bench.serving_bench import synthetic_observations
from vla_sensor.data.config import DataConfig
from vla_sensor.data.live import LiveSensorStream
from vla_sensor.data.windows import WindowSpec
from vla_sensor.eval.policy import LoadedPolicy, RunPolicy
from vla_sensor.models.vla import build_model


def _assert_same_batch(got: dict, want: dict, where: object) -> None:
    assert set(got) == set(want), (where, set(got) ^ set(want))
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), (where, key)
        else:
            assert got[key] == value, (where, key)


def test_a_batch_in_buffers_equals_the_datasets_path_request_after_request(loaded_policy) -> None:
    """batch() is the dataset's own path (tests/eval/test_closed_loop.py); the buffered one gives the
    same tensors at every step — across the sensor ring's wrap (8192 rows: step 127 of 65 rows) and
    with resized 64x64 images — and its buffers are overwritten, never shared with a kept batch."""
    plain, buffered = loaded_policy.new_session(), loaded_policy.new_session()
    assert buffered.buffers.patches is not None
    kept = []
    for k, obs in enumerate(observation_stream(3, 140)):
        want = plain.batch(obs)
        got = buffered.batch_in_buffers(obs)
        _assert_same_batch(got, want, k)
        kept.append((k, want, {key: v.clone() if isinstance(v, torch.Tensor) else v for key, v in want.items()}))
    for k, batch, copy in kept:  # later requests did not touch an earlier plain batch
        _assert_same_batch(batch, copy, k)


def test_consecutive_requests_with_different_images_give_independent_correct_actions(loaded_policy) -> None:
    """predict() (buffered) equals the model on the plain batch at each step, and an action chunk a
    caller kept does not change with the next request."""
    policy, plain = RunPolicy(loaded_policy), loaded_policy.new_session()
    chunks = []
    for obs in observation_stream(4, 3):
        chunk = policy.predict(obs)
        assert np.array_equal(chunk, loaded_policy.forward(plain.batch(obs)))
        chunks.append((chunk, chunk.copy()))
    assert not np.array_equal(chunks[0][1], chunks[1][1])  # different images: different actions
    for chunk, copy in chunks:
        assert np.array_equal(chunk, copy)


def test_the_prompt_ids_are_a_new_tensor_per_batch(loaded_policy) -> None:
    session = loaded_policy.new_session()
    obs = observation_stream(5, 2)
    first = session.batch_in_buffers(obs[0])["input_ids"]
    first[0, 0] = -7  # a caller writing into its batch cannot change the next one
    second = session.batch_in_buffers({**obs[1], "instruction": obs[0]["instruction"]})["input_ids"]
    assert second[0, 0] != -7 and torch.equal(second, loaded_policy.new_session().batch(obs[1])["input_ids"])


def test_a_state_policys_buffered_batch_carries_the_state() -> None:
    model = build_model({"sensor_hidden_dim": 32, "sensor_output_dim": 48}, action_dim=3, horizon=4,
                        view_selection=["left"], image_size=(56, 56), state_dim=3)
    loaded = LoadedPolicy(model, OmegaConf.structured(DataConfig))
    plain, buffered = loaded.new_session(), loaded.new_session()
    for k, obs in enumerate(synthetic_observations(3, image_size=56)):
        obs = {**obs, "images": {"left": obs["images"]["left"]}, "state": np.array([k, 1, 2], np.float32)}
        _assert_same_batch(buffered.batch_in_buffers(obs), plain.batch(obs), k)


def test_a_run_trained_without_a_processed_image_size_keeps_the_plain_path() -> None:
    """84x70 is resized by the Qwen processor (70 is off the 28-pixel grid): no patch buffers for it."""
    model = build_model({"sensor_hidden_dim": 32, "sensor_output_dim": 48}, action_dim=3, horizon=4,
                        view_selection=["left"], image_size=(84, 70))
    loaded = LoadedPolicy(model, OmegaConf.structured(DataConfig))
    buffered, plain = loaded.new_session(), loaded.new_session()
    assert buffered.buffers.patches is None
    obs = synthetic_observations(1, image_size=64)[0]
    obs = {**obs, "images": {"left": obs["images"]["left"]}}
    _assert_same_batch(buffered.batch_in_buffers(obs), plain.batch(obs), 0)


@pytest.mark.parametrize("spec", [WindowSpec(50), WindowSpec(50, window_seconds=0.05), WindowSpec(50, adaptive=True)],
                         ids=["fixed", "seconds", "adaptive"])
def test_shared_windows_of_a_mirrored_ring_equal_copied_ones(spec: WindowSpec) -> None:
    """A window handed out as a view of the ring (mirror rows: in one piece even where the ring wraps)
    equals the copied window, with the same valid length, over many wraps of a small ring."""
    rng = np.random.default_rng(0)
    mirrored, copied = LiveSensorStream(4, capacity=128, mirror=50), LiveSensorStream(4, capacity=128)
    out = np.full((50, 4), np.nan, np.float32)
    t, shared = 0.0, 0
    for step in range(60):
        n = int(rng.integers(1, 40))
        ts = t + np.arange(1, n + 1) / 650.0
        t = float(ts[-1])
        values = rng.standard_normal((n, 4)).astype(np.float32)
        mirrored.append(ts, values)
        copied.append(ts, values)
        want, want_len = copied.window(spec)
        got, got_len = mirrored.window(spec, out=out, share=True)
        assert got_len == want_len and np.array_equal(got, want), step
        shared += int(np.shares_memory(got, mirrored._values))
        np.testing.assert_array_equal(mirrored.values, copied.values)
    assert shared > 40  # most windows needed no copy at all


def test_a_window_into_a_reused_buffer_zeroes_only_what_is_padding() -> None:
    spec = WindowSpec(window_size=20)
    stream = LiveSensorStream(3, capacity=64)
    out = np.full((20, 3), 7.0, np.float32)  # stale values from an earlier request
    stream.append(np.arange(1, 6) / 650.0, np.ones((5, 3), np.float32))
    window, length = stream.window(spec, out=out)
    assert length == 5 and np.shares_memory(window, out)
    assert (window[:15] == 0).all() and (window[15:] == 1).all()
    small = np.zeros((4, 3), np.float32)  # too few rows: a new array instead
    window, _ = stream.window(spec, out=small)
    assert window.shape == (20, 3) and not np.shares_memory(window, small)
