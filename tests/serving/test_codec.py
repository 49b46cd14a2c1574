"""The wire format: typed arrays round-trip exactly; anything else from the network is refused by name."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from vla_sensor.serving.codec import ARRAY_KEY, ProtocolError, decode_array, pack, unpack
from vla_sensor.serving.protocol import decode_observation, encode_jpeg, encode_observation


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64", "int64", "bool"])
def test_typed_arrays_round_trip_exactly(dtype: str) -> None:
    a = (np.random.default_rng(0).standard_normal((3, 4, 2)) * 100).astype(dtype)
    got = decode_array(unpack(pack({"a": a}))["a"], "a")
    assert got.dtype == a.dtype and got.shape == a.shape and np.array_equal(got, a)


def test_non_contiguous_and_big_endian_arrays_are_sent_as_little_endian_c_order() -> None:
    a = np.arange(12, dtype=">f8").reshape(3, 4)[:, ::2]
    got = decode_array(unpack(pack({"a": a}))["a"], "a")
    assert got.dtype == np.float64 and np.array_equal(got, a)


@pytest.mark.parametrize(("obj", "needle"), [
    ({ARRAY_KEY: True, "dtype": "object", "shape": [1], "data": b"x"}, "dtype 'object' is not accepted"),
    ({ARRAY_KEY: True, "dtype": "float32", "shape": [2, 3], "data": b"\0" * 20}, "needs 24"),
    ({ARRAY_KEY: True, "dtype": "float32", "shape": [-1], "data": b""}, "shape must be"),
    ({ARRAY_KEY: True, "dtype": "float32", "shape": [1], "data": "abcd"}, "data must be binary"),
    ([1, 2, 3], "expected a typed array map"),
])
def test_bad_typed_arrays_are_refused_by_field(obj: object, needle: str) -> None:
    with pytest.raises(ProtocolError, match=r"sensor\.values") as info:
        decode_array(obj, "sensor.values")
    assert needle in str(info.value)


def test_frames_that_are_not_a_msgpack_map_are_refused() -> None:
    with pytest.raises(ProtocolError, match="not a valid msgpack"):
        unpack(b"\xc1\x00")
    with pytest.raises(ProtocolError, match="expected a map"):
        unpack(msgpack.packb([1, 2]))


def test_observations_round_trip_with_jpeg_images() -> None:
    rng = np.random.default_rng(1)
    img = np.full((32, 48, 3), 128, np.uint8)
    obs = {"images": {"left": img}, "instruction": "go",
           "sensor": {"timestamps": np.arange(3, dtype=np.float64), "values": rng.random((3, 5), np.float32)}}
    got = decode_observation(unpack(pack(encode_observation(obs, jpeg_quality=95)))["observation"], 10**6)
    assert got["images"]["left"].shape == (32, 48, 3) and np.abs(got["images"]["left"].astype(int) - 128).max() <= 2
    assert np.array_equal(got["sensor"]["values"], obs["sensor"]["values"]) and got["instruction"] == "go"
    with pytest.raises(ProtocolError, match=r"images\['left'\]: .*exceeds"):
        decode_observation({"images": {"left": encode_jpeg(img, 90)}}, max_pixels=100)
    with pytest.raises(ProtocolError, match=r"images\['left'\]: not a readable"):
        decode_observation({"images": {"left": b"not an image"}}, max_pixels=100)
