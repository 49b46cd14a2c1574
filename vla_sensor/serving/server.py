"""The policy server: one loaded model, many websocket clients, each with its own episode state.

Concurrency: the asyncio event loop only moves bytes (handshakes, frames, pings). Everything CPU-bound
for a request — decoding, pre-processing, the model, encoding the reply — runs in one worker thread,
so one client's forward pass never stalls another client's I/O, requests reach the model one at a
time (the model and torch's thread pool are not shared between concurrent forwards), and each
client's session is only ever touched by that thread. A client's session lives exactly as long as
its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hmac
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from http import HTTPStatus
from typing import Any, Protocol

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from vla_sensor.data.observation import ObservationError
from vla_sensor.serving import openpi
from vla_sensor.serving import protocol as P
from vla_sensor.serving.codec import ProtocolError, pack, unpack
from vla_sensor.serving.config import ServeConfig
from vla_sensor.serving.limits import check_request

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = int(ServeConfig.max_request_mb * 2**20)  # the serve config's defaults, in bytes


class Session(Protocol):
    """One client's episode state (e.g. :class:`vla_sensor.eval.policy.PolicySession`)."""

    def reset(self) -> None: ...

    def batch(self, obs: Any) -> Any: ...


def prepare(session: Session, obs: Any) -> Any:
    """The session's batch of ``obs`` in its reused buffers when it has them (used before the next request)."""
    in_buffers = getattr(session, "batch_in_buffers", None)
    return session.batch(obs) if in_buffers is None else in_buffers(obs)


class ServablePolicy(Protocol):
    """A loaded model the server can share between clients (e.g. :class:`vla_sensor.eval.policy.LoadedPolicy`)."""

    views: list[str]
    channels: int
    horizon: int
    action_dim: int

    def new_session(self) -> Session: ...

    def forward(self, batch: Any) -> np.ndarray: ...


class ModelThread(Executor):
    """One daemon thread that runs every request, in order.

    Not a ThreadPoolExecutor: the interpreter joins those at exit, so a request stuck in the model
    would keep a stopped server alive; a daemon thread is abandoned once ``stop_timeout_s`` is over."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="policy-model", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            with contextlib.suppress(queue.Empty):
                while (item := self._queue.get_nowait()) is not None:
                    item[0].cancel()
        self._queue.put(None)
        if wait:
            self._thread.join()


def _ms(seconds: float) -> float:
    return round(1e3 * seconds, 4)


class PolicyServer:
    """Serves ``policy`` over websockets on ``host:port`` (port 0: any free port, see :attr:`port`)."""

    def __init__(self, policy: ServablePolicy, *, host: str = ServeConfig.host, port: int = ServeConfig.port,
                 token: str | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_image_pixels: int = ServeConfig.max_image_pixels,
                 max_instruction_tokens: int = ServeConfig.max_instruction_tokens,
                 stop_timeout_s: float = ServeConfig.stop_timeout_s) -> None:
        if min(max_request_bytes, max_image_pixels, max_instruction_tokens) < 1:
            raise ValueError("max_request_bytes, max_image_pixels, max_instruction_tokens: expected positive limits")
        self.policy = policy
        self.host, self.port = host, int(port)
        self.token = token or None
        self.max_request_bytes = int(max_request_bytes)
        self.max_image_pixels = int(max_image_pixels)
        self.max_instruction_tokens = int(max_instruction_tokens)
        self.stop_timeout_s = float(stop_timeout_s)
        transform = getattr(policy, "transform", None)
        self.tokenizer = getattr(transform, "tokenizer", None)
        settings = getattr(transform, "settings", None)
        self.min_image_side = int(settings.factor) if settings is not None else 1  # one merged vision patch
        self._running: set[Any] = set()  # the model thread's futures, waited for (bounded) at stop
        self.sessions: dict[int, Session] = {}  # connection id -> its episode state
        self.requests = 0
        self._worker: ModelThread | None = None
        self._accepted: set[str] = set()  # instructions within max_instruction_tokens (the model thread's)

    def metadata(self) -> dict[str, Any]:
        """The ``hello`` message every client receives on connect."""
        spec = getattr(self.policy, "spec", None)
        size = getattr(self.policy, "image_size", None)
        return {
            "type": "hello", "protocol": P.PROTOCOL_VERSION, "views": list(self.policy.views),
            "channels": int(self.policy.channels), "horizon": int(self.policy.horizon),
            "action_dim": int(self.policy.action_dim), "image_size": None if size is None else list(size),
            "window": None if spec is None else dataclasses.asdict(spec),
            "state_dim": int(getattr(self.policy, "state_dim", 0) or 0),
            "max_request_bytes": self.max_request_bytes, "max_image_pixels": self.max_image_pixels,
            "max_instruction_tokens": self.max_instruction_tokens,
            "min_image_size": [self.min_image_side, self.min_image_side],
        }

    async def serve(self, stop: asyncio.Future[Any], ready: Callable[[PolicyServer], None] | None = None) -> None:
        """Serve until ``stop`` is done; then close every connection, giving a running request at most
        ``stop_timeout_s`` to finish (after that it is abandoned: the model thread is never joined).

        Everything alive now (the model, torch, the tokenizer: ~10^5 objects) is moved out of the
        garbage collector's reach for the serving time: a full collection then scans only what requests
        left behind, instead of pausing a request for 0.1 s or more (measured)."""
        self._worker = ModelThread()
        gc.collect()
        gc.freeze()
        try:
            async with serve(self._handle, self.host, self.port, process_request=self._check_token,
                             compression=None, max_size=2 * self.max_request_bytes + 2**16) as server:
                self.port = int(server.sockets[0].getsockname()[1])
                if ready is not None:
                    ready(self)
                await stop
                # closing the server waits for every connection's handler: unblock those awaiting the model
                running = [f for f in self._running if not f.done()]
                if running:
                    _, late = await asyncio.wait(running, timeout=self.stop_timeout_s)
                    for future in late:
                        future.cancel()
        finally:
            self._worker.shutdown(wait=False, cancel_futures=True)
            gc.unfreeze()

    def _check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the handshake (HTTP 401, the reason in the body) unless the client sent the token."""
        if self.token is None:
            return None
        sent = request.headers.get(P.TOKEN_HEADER, "")
        if hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
            return None
        why = "missing" if not sent else "wrong"
        log.warning("refused %s: %s token", connection.remote_address, why)
        return connection.respond(HTTPStatus.UNAUTHORIZED, f"token: {why} ({P.TOKEN_HEADER}: Bearer <token>)\n")

    async def _handle(self, ws: ServerConnection) -> None:
        key = id(ws)
        self.sessions[key] = self.policy.new_session()
        loop = asyncio.get_running_loop()
        log.info("client %s connected (%d connected)", ws.remote_address, len(self.sessions))
        try:
            await ws.send(pack(self.metadata()))
            async for frame in ws:
                received = time.perf_counter()
                if isinstance(frame, str):
                    reply = pack(P.error_reply(P.PROTOCOL, "message: expected a binary msgpack frame, got text"))
                elif len(frame) > self.max_request_bytes:
                    reply = pack(P.error_reply(P.TOO_LARGE, f"message: {len(frame)} bytes exceeds the server's "
                                                            f"limit of {self.max_request_bytes} bytes"))
                else:
                    session = self.sessions[key]
                    gone = lambda: ws.state is State.CLOSED  # noqa: E731
                    future = loop.run_in_executor(self._worker, self._respond, session, frame, received, gone)
                    self._running.add(future)
                    future.add_done_callback(self._running.discard)
                    reply = await future
                    if reply is None:
                        break
                await ws.send(reply)
        except ConnectionClosed:
            pass
        finally:
            self.sessions.pop(key, None)
            log.info("client %s left (%d connected)", ws.remote_address, len(self.sessions))

    def _respond(self, session: Session, frame: bytes, received: float, gone: Callable[[], bool]
                 ) -> bytes | str | None:
        """The reply frame to one request (in the worker thread); None when its client has already left.

        A frame without ``type`` is an openpi request: answered in openpi's encoding, errors as text."""
        start = time.perf_counter()
        if gone():
            return None
        try:
            message = unpack(frame)
        except ProtocolError as exc:
            return pack(P.error_reply(P.PROTOCOL, str(exc)))
        if openpi.is_openpi(message):
            return self._respond_openpi(session, message, start, received)
        try:
            kind = message.get("type")
            if kind == "reset":
                session.reset()
                return pack({"type": "reset"})
            if kind != "predict":
                raise ProtocolError(f"type: expected 'predict' or 'reset', got {kind!r}")
            if "observation" not in message:
                raise ProtocolError("observation: missing from the predict request")
            obs = P.decode_observation(message["observation"], self.max_image_pixels)
            actions, timing, done = self._act(session, obs, start, received)
        except ObservationError as exc:
            return pack(P.error_reply(P.OBSERVATION, str(exc)))
        except ProtocolError as exc:
            return pack(P.error_reply(P.PROTOCOL, str(exc)))
        except Exception as exc:  # a bug or a model failure: report it, keep serving the others
            log.exception("request failed")
            return pack(P.error_reply(P.INTERNAL, f"{type(exc).__name__}: {exc}"))
        reply = {"type": "actions", "actions": actions, "timing": timing}
        pack(reply)
        encoded = time.perf_counter()
        timing["encode_ms"] = _ms(encoded - done)
        timing["server_ms"] = _ms(encoded - received)
        return pack(reply)

    def _act(self, session: Session, obs: dict[str, Any], start: float, received: float
             ) -> tuple[np.ndarray, dict[str, float], float]:
        """The actions for a decoded observation (after the request limits), its timing, and when it was done."""
        check_request(obs, self.tokenizer, self.max_instruction_tokens, self.min_image_side, self._accepted)
        decoded = time.perf_counter()
        batch = prepare(session, obs)
        prepared = time.perf_counter()
        actions = np.asarray(self.policy.forward(batch), dtype=np.float32)
        done = time.perf_counter()
        self.requests += 1
        timing = {"queue_ms": _ms(start - received), "decode_ms": _ms(decoded - start),
                  "preprocess_ms": _ms(prepared - decoded), "model_ms": _ms(done - prepared), "encode_ms": 0.0}
        return actions, timing, done

    def _respond_openpi(self, session: Session, message: dict[Any, Any], start: float, received: float
                        ) -> bytes | str:
        """openpi's ``infer``: ``{"actions", "server_timing"}``, or a text frame naming what was refused.

        openpi's client sends no reset: a new episode starts when the sensor timestamps start over."""
        try:
            obs = openpi.decode(message)
            sensor = obs.get("sensor")
            stream = getattr(session, "stream", None)
            if isinstance(sensor, dict) and stream is not None:
                ts = sensor.get("timestamps")
                if (isinstance(ts, np.ndarray) and ts.ndim == 1 and ts.shape[0] and stream.timestamps.shape[0]
                        and ts[0] <= stream.timestamps[-1]):
                    session.reset()
            actions, timing, done = self._act(session, obs, start, received)
        except ObservationError as exc:
            return f"{P.OBSERVATION}: {exc}"
        except ProtocolError as exc:
            return f"{P.PROTOCOL}: {exc}"
        except Exception as exc:  # a bug or a model failure: report it, keep serving the others
            log.exception("request failed")
            return f"{P.INTERNAL}: {type(exc).__name__}: {exc}"
        reply = {"actions": actions, "server_timing": timing}
        openpi.pack(reply)
        encoded = time.perf_counter()
        timing["encode_ms"] = _ms(encoded - done)
        timing["server_ms"] = _ms(encoded - received)
        return openpi.pack(reply)


def run_server(server: PolicyServer, ready: Callable[[PolicyServer], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT (Ctrl-C), then shut down cleanly (blocking; the main thread)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(None))
        await server.serve(stop, ready)

    asyncio.run(main())


@contextlib.contextmanager
def serve_in_background(policy: ServablePolicy, **kwargs: Any) -> Iterator[PolicyServer]:
    """A :class:`PolicyServer` running in a daemon thread for the ``with`` block (port 0 by default)."""
    kwargs.setdefault("port", 0)
    server = PolicyServer(policy, **kwargs)
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["stop"] = state["loop"].create_future()
        await server.serve(state["stop"], lambda _: started.set())

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the caller below
            state["error"] = exc
            started.set()

    thread = threading.Thread(target=target, name="policy-server", daemon=True)
    thread.start()
    started.wait(30)
    if "error" in state or not started.is_set():
        raise RuntimeError(f"policy server did not start: {state.get('error', 'timed out')}")
    try:
        yield server
    finally:
        state["loop"].call_soon_threadsafe(lambda: state["stop"].done() or state["stop"].set_result(None))
        thread.join(30)
