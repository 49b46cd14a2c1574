"""The policy server over real sockets on 127.0.0.1: same actions as in process, named errors, isolation."""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
from websockets.sync.client import connect

from tests.serving.conftest import observation_stream
from vla_sensor.data.observation import ObservationError
from vla_sensor.eval.policy import RunPolicy
from vla_sensor.serving import PolicyClient, ServingError
from vla_sensor.serving.codec import pack, unpack
from vla_sensor.serving.protocol import TOKEN_ENV, encode_observation
from vla_sensor.serving.server import serve_in_background

pytestmark = pytest.mark.timeout(60)


def _wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_served_actions_equal_the_in_process_policy(loaded_policy) -> None:
    reference = RunPolicy(loaded_policy)
    with serve_in_background(loaded_policy) as server, PolicyClient("127.0.0.1", server.port) as client:
        assert client.views == ["left", "oak"] and client.metadata["horizon"] == 8
        for episode in range(2):  # reset forgets the stream: the second episode starts at time 0 again
            client.reset()
            reference.reset()
            for obs in observation_stream(episode, 3):
                got = client.predict(obs)
                assert got.shape == (8, 3) and got.dtype == np.float32
                assert np.array_equal(got, reference.predict(obs))
        timing = client.last_timing
        assert {"decode_ms", "preprocess_ms", "model_ms", "encode_ms", "server_ms", "round_trip_ms"} <= set(timing)
        assert timing["round_trip_ms"] >= timing["server_ms"] >= timing["model_ms"] > 0


def _broken(obs: dict, how: str) -> dict:
    bad = {**obs, "sensor": dict(obs["sensor"])}
    if how == "missing":
        del bad["instruction"]
    elif how == "dtype":
        bad["sensor"]["values"] = obs["sensor"]["values"].astype(np.float64)
    elif how == "shape":
        bad["sensor"]["values"] = obs["sensor"]["values"][:, :10]
    elif how == "nan":
        bad["sensor"]["values"] = np.full_like(obs["sensor"]["values"], np.nan)
    elif how == "view":
        bad["images"] = {"left": obs["images"]["left"]}
    return bad


def test_malformed_requests_get_an_error_naming_the_problem_and_serving_goes_on(loaded_policy) -> None:
    obs = observation_stream(0, 4)
    with serve_in_background(loaded_policy, max_request_bytes=2**20) as server:
        with PolicyClient("127.0.0.1", server.port) as client:
            client.predict(obs[0])
            for how, needle in [("missing", "missing key 'instruction'"), ("dtype", "sensor.values: expected dtype float32"),
                                ("shape", "sensor.values: expected 1026 channels"), ("nan", "NaN"),
                                ("view", "missing view 'oak'")]:
                with pytest.raises(ObservationError, match=needle):
                    client.predict(_broken(obs[1], how))
            big = {**obs[1], "images": {v: np.zeros((550, 550, 3), np.uint8) for v in ("left", "oak")}}
            with pytest.raises(ServingError, match=r"too_large: message: .* exceeds the server's limit of 1048576"):
                client.predict(big)
            assert client.predict(obs[1]).shape == (8, 3)  # the same connection keeps its stream and goes on
            huge = {**obs[2], "images": {v: np.zeros((1000, 1000, 3), np.uint8) for v in ("left", "oak")}}
            with pytest.raises(ServingError, match=r"code 1009: frame with .* exceeds limit"):
                client.predict(huge)  # beyond twice the limit the transport hangs up without reading it
            assert client.predict(obs[2]).shape == (8, 3)  # reconnected: a fresh session
        with connect(f"ws://127.0.0.1:{server.port}", compression=None, proxy=None) as raw:
            assert unpack(raw.recv(timeout=10))["type"] == "hello"
            for frame, needle in [(b"\xc1garbage", "not a valid msgpack"), ("text", "binary msgpack"),
                                  (msgpack.packb({"type": "fly"}), "type: expected 'predict' or 'reset'"),
                                  (msgpack.packb({"type": "predict"}), "observation: missing"),
                                  (pack({"type": "predict", "observation": {**obs[2], "sensor": {
                                      "timestamps": {"__ndarray__": True, "dtype": "object", "shape": [1], "data": b"x"},
                                      "values": obs[2]["sensor"]["values"]}}}), "sensor.timestamps: dtype 'object'")]:
                raw.send(frame)
                reply = unpack(raw.recv(timeout=10))
                assert reply["type"] == "error" and needle in reply["message"], (needle, reply)
            raw.send(pack(encode_observation(obs[3])))
            assert unpack(raw.recv(timeout=30))["type"] == "actions"


def test_a_token_is_required_of_every_client_when_set(loaded_policy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with serve_in_background(loaded_policy, token="s3cret") as server:
        with pytest.raises(ServingError, match="HTTP 401 token: missing"):
            PolicyClient("127.0.0.1", server.port)
        with pytest.raises(ServingError, match="HTTP 401 token: wrong"):
            PolicyClient("127.0.0.1", server.port, token="guess")
        monkeypatch.setenv(TOKEN_ENV, "s3cret")
        with PolicyClient("127.0.0.1", server.port) as client:
            assert client.predict(observation_stream(0, 1)[0]).shape == (8, 3)


def test_concurrent_clients_never_see_each_others_sensor_stream(loaded_policy) -> None:
    """Two clients interleave requests with different streams (one starting at t=100 s); each gets
    exactly what an in-process policy fed only its own stream gives."""
    streams = {0: observation_stream(10, 4), 1: observation_stream(11, 4, start=100.0)}
    want = {}
    for k, stream in streams.items():
        reference = RunPolicy(loaded_policy)
        want[k] = [reference.predict(obs) for obs in stream]
    assert not np.array_equal(want[0][-1], want[1][-1])
    got: dict[int, list[np.ndarray]] = {0: [], 1: []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def drive(k: int, port: int) -> None:
        try:
            with PolicyClient("127.0.0.1", port) as client:
                for obs in streams[k]:
                    barrier.wait(timeout=30)  # both requests in flight together
                    got[k].append(client.predict(obs))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    with serve_in_background(loaded_policy) as server:
        threads = [threading.Thread(target=drive, args=(k, server.port)) for k in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert _wait_until(lambda: not server.sessions)
    for k in streams:
        assert all(np.array_equal(a, b) for a, b in zip(got[k], want[k], strict=True)), k


def test_a_client_leaving_mid_request_frees_its_state(loaded_policy) -> None:
    obs = observation_stream(0, 1)[0]
    with serve_in_background(loaded_policy) as server:
        with connect(f"ws://127.0.0.1:{server.port}", compression=None, proxy=None) as raw:
            raw.recv(timeout=10)
            assert len(server.sessions) == 1
            raw.send(pack(encode_observation(obs)))
            raw.close()  # before the reply
        assert _wait_until(lambda: not server.sessions), server.sessions
        with PolicyClient("127.0.0.1", server.port) as client:
            assert client.predict(obs).shape == (8, 3)
