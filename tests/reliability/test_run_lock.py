"""One writer per run directory: a second ``train.py`` on a directory in use is refused at once with the
holder's PID and host; the lock of a killed run is taken over; where the filesystem has no ``flock``
the recorded PID decides. (2-process DDP and multirun jobs: tests/training/test_distributed.py.)"""

from __future__ import annotations

import errno
import fcntl
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.helpers import assert_ok, launch, metric_steps
from tests.training.helpers import REPO, TOY_ARGS, env
from vla_sensor.training.run_dir import RUN_LOCK, RunDirBusyError, RunLock

LONG = [*TOY_ARGS, "trainer.max_steps=1000000", "trainer.save_every=0", "trainer.val_every=0", "trainer.log_every=1"]
SHORT = [*TOY_ARGS, "trainer.max_steps=4", "trainer.save_every=2", "trainer.resume=auto"]
TOY_ENV = {"VLA_TOY_SAMPLES": "64"}


def _holder(run: Path) -> dict:
    text = (run / RUN_LOCK).read_text() if (run / RUN_LOCK).is_file() else ""
    return json.loads(text) if text.strip() else {}


def _wait_until_training(proc: subprocess.Popen, run: Path) -> None:
    """Until the first run logged a step (it holds the lock then); fails if it ends first."""
    deadline = time.monotonic() + 180  # start-up on a busy machine; not a timing assertion
    while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip()):
        assert proc.poll() is None, f"the first run ended early:\n{proc.stderr.read()[-4000:]}"
        assert time.monotonic() < deadline, "the first run never logged a step"
        time.sleep(0.2)


def test_second_train_py_on_a_run_directory_in_use_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(REPO / "train.py"), *LONG, f"output_dir={run}"], cwd=tmp_path,
                             env=env(**TOY_ENV), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_training(first, run)
        assert _holder(run) == {**_holder(run), "pid": first.pid, "host": socket.gethostname()}
        config = (run / "config.yaml").read_text()
        for args in ([*SHORT, f"output_dir={run}"], [*SHORT, f"output_dir={run}", "trainer.lr=0.5"]):
            second = launch(args, tmp_path, **TOY_ENV)
            assert second.returncode != 0
            assert f"PID {first.pid} on host {socket.gethostname()}" in second.stderr, second.stderr[-3000:]
            assert "in use by another training" in second.stderr
            assert (run / "config.yaml").read_text() == config  # refused before it wrote anything
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    steps = metric_steps(run)
    assert steps == sorted(set(steps)), "another process appended to this run's metrics"

    # the killed run's lock is stale: the resubmitted command takes the directory over
    assert _holder(run)["pid"] == first.pid
    again = launch([*SHORT, f"output_dir={run}", "trainer.log_every=2"], tmp_path, **TOY_ENV)
    assert_ok(again)
    assert f"taking over the lock of PID {first.pid}" in again.stdout + again.stderr, again.stdout[-3000:]
    assert _holder(run) == {}  # released when the run ended


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_api_live_holder_released_and_stale(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import os

    held = RunLock.acquire(tmp_path)
    try:
        with pytest.raises(RunDirBusyError, match=rf"PID {os.getpid()} on host"):
            RunLock.acquire(tmp_path)  # another open file description: refused like another process
    finally:
        held.release()
    with caplog.at_level("WARNING"):
        RunLock.acquire(tmp_path).release()  # a clean release: taken again without a takeover warning
    assert "taking over" not in caplog.text
    dead = _dead_pid()
    (tmp_path / RUN_LOCK).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with caplog.at_level("WARNING"):
        RunLock.acquire(tmp_path).release()  # nobody holds the flock: taken over
    assert f"taking over the lock of PID {dead}" in caplog.text


@pytest.fixture()
def no_flock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem without flock (some network mounts): ENOLCK."""
    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", refuse)


def test_without_flock_the_recorded_pid_decides(tmp_path: Path, no_flock: None) -> None:
    import os

    lock = tmp_path / RUN_LOCK
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "x"}))
    with pytest.raises(RunDirBusyError, match=rf"PID {os.getpid()} on host {socket.gethostname()}"):
        RunLock.acquire(tmp_path)
    lock.write_text(json.dumps({"pid": 12345, "host": "another-node"}))
    with pytest.raises(RunDirBusyError, match=rf"on host another-node.*delete {lock}"):
        RunLock.acquire(tmp_path)
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    taken = RunLock.acquire(tmp_path)
    assert _holder(tmp_path)["pid"] == os.getpid()
    taken.release()
    assert _holder(tmp_path) == {}
