"""Bounded work per request over real sockets on 127.0.0.1: long instructions and tiny images are
refused naming the limit, other clients keep being served, SIGTERM ends a busy server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from websockets.sync.client import connect

from tests.serving.conftest import observation_stream
from vla_sensor.data.observation import ObservationError
from vla_sensor.serving import PolicyClient
from vla_sensor.serving.codec import unpack
from vla_sensor.serving.server import serve_in_background

pytestmark = pytest.mark.timeout(120)


def test_the_hello_announces_the_limits_and_state_dim(loaded_policy) -> None:
    with serve_in_background(loaded_policy, max_instruction_tokens=64) as server, \
            PolicyClient("127.0.0.1", server.port) as client:
        hello = client.metadata
        assert hello["max_instruction_tokens"] == 64 and hello["min_image_size"] == [28, 28]
        assert hello["state_dim"] == loaded_policy.state_dim == 0


@pytest.mark.parametrize("chars", [200, 5_000, 1_000_000])
def test_an_instruction_over_the_token_limit_is_refused_naming_the_limit(loaded_policy, chars: int) -> None:
    obs = observation_stream(0, 2)
    with serve_in_background(loaded_policy, max_instruction_tokens=64) as server, \
            PolicyClient("127.0.0.1", server.port) as client:
        long = {**obs[0], "instruction": ("insert the needle " * (chars // 18 + 1))[:chars]}
        with pytest.raises(ObservationError, match=r"instruction: .* exceeds the server's limit of 64 tokens"):
            client.predict(long)
        ok = {**obs[0], "instruction": "insert the needle"}  # the refused request took nothing from the stream
        assert client.predict(ok).shape == (8, 3)


def test_an_instruction_at_the_limit_is_served(loaded_policy) -> None:
    tokenizer = loaded_policy.transform.tokenizer
    text = "insert " * 40
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    with serve_in_background(loaded_policy, max_instruction_tokens=n) as server, \
            PolicyClient("127.0.0.1", server.port) as client:
        assert client.predict({**observation_stream(0, 1)[0], "instruction": text}).shape == (8, 3)
    with serve_in_background(loaded_policy, max_instruction_tokens=n - 1) as server, \
            PolicyClient("127.0.0.1", server.port) as client, \
            pytest.raises(ObservationError, match=f"{n} tokens exceeds the server's limit of {n - 1}"):
        client.predict({**observation_stream(0, 1)[0], "instruction": text})


@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (27, 64), (64, 3)])
def test_images_below_the_models_minimum_are_refused(loaded_policy, shape) -> None:
    obs = observation_stream(0, 1)[0]
    bad = {**obs, "images": {**obs["images"], "oak": np.zeros((*shape, 3), np.uint8)}}
    with serve_in_background(loaded_policy) as server, PolicyClient("127.0.0.1", server.port) as client:
        with pytest.raises(ObservationError, match=rf"images\['oak'\]: {shape[0]}x{shape[1]} is below the "
                                                   r"model's minimum of 28x28"):
            client.predict(bad)
        small = {**obs, "images": {v: np.zeros((28, 28, 3), np.uint8) for v in obs["images"]}}
        assert client.predict(small).shape == (8, 3)


def test_other_clients_are_served_while_a_long_instruction_is_refused(loaded_policy) -> None:
    obs = observation_stream(3, 6)
    errors: list[BaseException] = []
    with serve_in_background(loaded_policy) as server:
        def flood() -> None:
            try:
                with PolicyClient("127.0.0.1", server.port) as c:
                    for _ in range(3):
                        with pytest.raises(ObservationError, match="limit of 512 tokens"):
                            c.predict({**obs[0], "instruction": "x " * 8_000_000})  # 16 MB
            except BaseException as exc:
                errors.append(exc)
        t = threading.Thread(target=flood)
        t.start()
        with PolicyClient("127.0.0.1", server.port, timeout=60) as client:
            for o in obs:
                assert client.predict(o).shape == (8, 3)
        t.join(90)
    assert not errors, errors


SLOW_SERVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from tests.serving.conftest import VIEWS
    from vla_sensor.serving.server import PolicyServer, run_server

    class Session:
        def reset(self): pass
        def batch(self, obs): return obs

    class Slow:
        views, channels, horizon, action_dim = VIEWS, 1026, 8, 3
        def new_session(self): return Session()
        def forward(self, batch):
            print("busy", flush=True)
            time.sleep(600)

    run_server(PolicyServer(Slow(), port=0, stop_timeout_s=1.0), lambda s: print(s.port, flush=True))
    print("stopped", flush=True)
""")


def test_sigterm_ends_the_server_while_a_request_runs(tmp_path) -> None:
    from vla_sensor.serving.codec import pack
    from vla_sensor.serving.protocol import encode_observation

    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_SERVER.format(root=os.getcwd()))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        with connect(f"ws://127.0.0.1:{port}", compression=None, proxy=None) as raw:
            assert unpack(raw.recv(timeout=10))["type"] == "hello"
            raw.send(pack(encode_observation(observation_stream(0, 1)[0])))
            assert proc.stdout.readline().strip() == "busy"  # the model is running the request
            proc.send_signal(signal.SIGTERM)
            rest = proc.communicate(timeout=60)[0]  # the forward would take 600 s
        assert "stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
