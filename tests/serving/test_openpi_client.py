"""openpi's own client (``openpi-client``, installed with ``--no-deps``) drives ``PolicyServer`` unchanged:
metadata on connect, ``infer`` over several episodes equal to the in-process policy, its
``ActionChunkBroker``, refusals raised as errors, and nothing but plain numeric arrays accepted."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from websockets.sync.client import connect

from tests.serving.conftest import observation_stream
from vla_sensor.eval.policy import RunPolicy
from vla_sensor.serving.server import serve_in_background

websocket_client_policy = pytest.importorskip(
    "openpi_client.websocket_client_policy",
    reason="openpi-client is installed by a separate step: pip install --no-deps openpi-client==0.1.2")
from openpi_client import msgpack_numpy  # noqa: E402
from openpi_client.action_chunk_broker import ActionChunkBroker  # noqa: E402

# openpi-client 0.1.2 calls websockets' connect() outside a context manager (its code, not ours)
pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")]


def test_openpi_client_gets_the_metadata_and_the_in_process_actions_over_episodes(loaded_policy) -> None:
    reference = RunPolicy(loaded_policy)
    with serve_in_background(loaded_policy) as server:
        client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", server.port)
        meta = client.get_server_metadata()
        assert meta["views"] == ["left", "oak"] and meta["horizon"] == 8 and meta["action_dim"] == 3
        assert meta["channels"] == 1026 and meta["state_dim"] == 0 and meta["max_instruction_tokens"] == 512
        for episode in range(3):  # openpi sends no reset: each episode's sensor clock starts at 0 again
            reference.reset()
            for obs in observation_stream(20 + episode, 3):
                reply = client.infer(obs)
                assert reply["actions"].shape == (8, 3) and reply["actions"].dtype == np.float32
                assert np.array_equal(reply["actions"], reference.predict(obs))
                assert reply["server_timing"]["model_ms"] > 0
        assert server.requests == 9


def test_action_chunk_broker_steps_through_each_served_chunk(loaded_policy) -> None:
    stream = observation_stream(5, 2)
    reference = RunPolicy(loaded_policy)
    chunks = [reference.predict(obs) for obs in stream]
    with serve_in_background(loaded_policy) as server:
        broker = ActionChunkBroker(websocket_client_policy.WebsocketClientPolicy("127.0.0.1", server.port), 4)
        steps = [broker.infer(stream[i // 4])["actions"] for i in range(8)]  # a new request every 4 steps
        assert server.requests == 2
    want = [chunks[0][i] for i in range(4)] + [chunks[1][i] for i in range(4)]
    assert all(np.array_equal(a, b) for a, b in zip(steps, want, strict=True))


def test_refusals_reach_the_openpi_client_as_errors_and_it_goes_on(loaded_policy) -> None:
    obs = observation_stream(0, 3)
    with serve_in_background(loaded_policy) as server:
        client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", server.port)
        client.infer(obs[0])
        bad = [({**obs[1], "instruction": "x " * 5000}, "limit of 512 tokens"),
               ({**obs[1], "images": {"left": obs[1]["images"]["left"]}}, "missing view 'oak'"),
               ({**obs[1], "images": {**obs[1]["images"], "oak": np.zeros((1, 1, 3), np.uint8)}}, "minimum of 28x28"),
               ({**obs[1], "sensor": {**obs[1]["sensor"], "values": obs[1]["sensor"]["values"][:, :9]}}, "1026"),
               ({**obs[1], "sensor": {**obs[1]["sensor"], "timestamps": obs[1]["sensor"]["timestamps"] * 1j}},
                "complex")]
        for o, needle in bad:
            with pytest.raises((RuntimeError, ValueError), match=needle):
                client.infer(o)
        assert client.infer(obs[1])["actions"].shape == (8, 3)


def test_object_arrays_are_never_built_from_the_wire(loaded_policy) -> None:
    obs = observation_stream(0, 1)[0]
    with serve_in_background(loaded_policy) as server, \
            connect(f"ws://127.0.0.1:{server.port}", compression=None, proxy=None) as raw:
        msgpack_numpy.unpackb(raw.recv(timeout=10))
        for dtype, needle in [("|O", "dtype '|O' is not accepted"), ("<c8", "dtype '<c8'"), ("|V4", "'|V4'")]:
            frame = msgpack_numpy.packb({**obs, "sensor": {**obs["sensor"], "timestamps": {
                b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": dtype, b"shape": [1]}}})
            raw.send(frame)
            reply = raw.recv(timeout=10)
            assert isinstance(reply, str) and needle in reply, reply
        raw.send(msgpack.packb({"images": {b"__ndarray__": True, b"data": b"\0" * 3, b"dtype": "|u1",
                                           b"shape": [2, 2]}}, use_bin_type=True))
        assert "data holds 3 bytes" in raw.recv(timeout=10)
        raw.send(msgpack_numpy.packb(obs))
        assert msgpack_numpy.unpackb(raw.recv(timeout=30))["actions"].shape == (8, 3)


def test_a_state_trained_policy_announces_state_dim_and_both_clients_get_its_refusal() -> None:
    from tests.eval.test_policy_state import _policy
    from vla_sensor.data.observation import ObservationError
    from vla_sensor.serving import PolicyClient

    policy = _policy(3)
    obs = observation_stream(0, 2)
    with serve_in_background(policy) as server:
        with PolicyClient("127.0.0.1", server.port) as client:
            assert client.metadata["state_dim"] == 3
            with pytest.raises(ObservationError, match="state: missing"):
                client.predict(obs[0])
            assert client.predict({**obs[0], "state": np.zeros(3, np.float32)}).shape == (4, 3)
        pi = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", server.port)
        assert pi.get_server_metadata()["state_dim"] == 3
        with pytest.raises(RuntimeError, match=r"state: .*\(3,\)"):
            pi.infer({**obs[0], "state": np.zeros(2, np.float32)})
        assert pi.infer({**obs[0], "state": np.zeros(3, np.float32)})["actions"].shape == (4, 3)
