"""A client of the policy server with the in-process policy's interface: ``reset()`` and ``predict(obs)``.

Anything that drives a :class:`~vla_sensor.data.observation.Policy` — the simulator's closed-loop
evaluation, a robot's control loop with :class:`vla_sensor.execution.ActionExecutor` — can use a
remote policy unchanged. Blocking (websockets' synchronous client): one request in flight at a time,
as a control loop needs.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlparse

import msgpack
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from vla_sensor.data.observation import Observation, ObservationError
from vla_sensor.serving import protocol as P
from vla_sensor.serving.codec import ProtocolError, decode_array, encode_default, unpack
from vla_sensor.serving.config import ServeConfig


class ServingError(RuntimeError):
    """The server refused or failed a request, or the connection broke; the message says which."""


class PolicyClient:
    """A policy served by ``python serve.py`` at ``host:port``.

    ``token``: the server's shared secret (default: the ``VLA_SERVE_TOKEN`` environment variable).
    ``jpeg_quality``: send images as JPEG (smaller, lossy) instead of raw arrays (exact).
    After each :meth:`predict`, :attr:`last_timing` holds the server's timing plus this side's.
    """

    def __init__(self, host: str = ServeConfig.host, port: int = ServeConfig.port, token: str | None = None, *,
                 timeout: float = 30.0, jpeg_quality: int | None = None) -> None:
        self.url = f"ws://{host}:{int(port)}"
        self.token = token if token is not None else os.environ.get(P.TOKEN_ENV) or None
        self.timeout = float(timeout)
        self.jpeg_quality = jpeg_quality
        self.last_timing: dict[str, float] = {}
        self._ws: ClientConnection | None = None
        # one msgpack buffer for every request: a fresh one would grow (and page-fault) through the
        # half-megabyte of a request's images and sensor rows each time; sent without a copy out of it
        self._packer = msgpack.Packer(default=encode_default, use_bin_type=True, autoreset=False)
        self.metadata: dict[str, Any] = {}
        self._connect()

    @classmethod
    def from_url(cls, url: str, token: str | None = None, **kwargs: Any) -> PolicyClient:
        """A client of ``ws://host:port``."""
        parsed = urlparse(url)
        if parsed.scheme != "ws" or not parsed.hostname or parsed.port is None:
            raise ValueError(f"policy server: expected ws://host:port, got {url!r}")
        return cls(parsed.hostname, parsed.port, token, **kwargs)

    @property
    def views(self) -> list[str]:
        """The camera views the served policy needs."""
        return list(self.metadata["views"])

    def _connect(self) -> None:
        headers = {P.TOKEN_HEADER: f"Bearer {self.token}"} if self.token else None
        try:
            # entered as a context manager: the form websockets supports without deprecation
            self._ws = connect(self.url, additional_headers=headers, compression=None, proxy=None,
                               open_timeout=self.timeout, max_size=None).__enter__()
        except InvalidStatus as exc:
            body = exc.response.body.decode(errors="replace").strip()
            raise ServingError(f"{self.url} refused the connection: HTTP {exc.response.status_code} {body}") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ServingError(f"{self.url}: cannot connect ({exc})") from None
        hello = self._receive()
        if hello.get("type") != "hello" or hello.get("protocol") != P.PROTOCOL_VERSION:
            raise ServingError(f"{self.url}: not a policy server of protocol {P.PROTOCOL_VERSION}: {hello}")
        self.metadata = hello

    def _receive(self) -> dict[str, Any]:
        assert self._ws is not None
        try:
            frame = self._ws.recv(timeout=self.timeout)
        except TimeoutError:
            self.close()
            raise ServingError(f"{self.url}: no reply within {self.timeout:.0f} s") from None
        except ConnectionClosed as exc:
            self._ws = None
            reason = exc.rcvd.reason if exc.rcvd else ""
            code = exc.rcvd.code if exc.rcvd else "none"
            raise ServingError(f"{self.url} closed the connection (code {code}{': ' + reason if reason else ''})"
                               ) from None
        if isinstance(frame, str):
            raise ServingError(f"{self.url}: expected a binary reply, got text")
        return unpack(frame)

    def _request(self, message: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
        """The reply to ``message``, the encode seconds and the send → reply seconds."""
        if self._ws is None:
            self._connect()
        assert self._ws is not None
        start = time.perf_counter()
        self._packer.reset()
        self._packer.pack(message)
        sent = time.perf_counter()
        try:
            with self._packer.getbuffer() as frame:
                self._ws.send(frame)
        except ConnectionClosed:
            self._ws = None
            raise ServingError(f"{self.url} closed the connection") from None
        finally:
            self._packer.reset()
        reply = self._receive()
        if reply.get("type") == "error":
            text = reply.get("message", "")
            if reply.get("error") == P.OBSERVATION:
                raise ObservationError(text)
            raise ServingError(f"{reply.get('error')}: {text}")
        return reply, sent - start, time.perf_counter() - sent

    def reset(self) -> None:
        """Start a new episode: the server forgets this client's sensor stream (reconnects if needed)."""
        reply, _, _ = self._request({"type": "reset"})
        if reply.get("type") != "reset":
            raise ServingError(f"reset: unexpected reply {reply.get('type')!r}")

    def predict(self, obs: Observation) -> np.ndarray:
        """The action chunk (horizon, A) float32 in robot units for ``obs`` (the server's policy)."""
        reply, encode_s, round_trip_s = self._request(P.encode_observation(obs, self.jpeg_quality))
        start = time.perf_counter()
        try:
            actions = decode_array(reply.get("actions"), "actions").copy()
        except ProtocolError as exc:
            raise ServingError(f"reply: {exc}") from None
        server = {k: float(v) for k, v in reply.get("timing", {}).items()}
        client_decode = time.perf_counter() - start
        self.last_timing = {**server, "client_encode_ms": 1e3 * encode_s, "round_trip_ms": 1e3 * round_trip_s,
                            "client_decode_ms": 1e3 * client_decode,
                            "transfer_ms": 1e3 * round_trip_s - server.get("server_ms", 0.0)}
        return actions

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
