"""``python serve.py`` serving a trained run: the closed-loop evaluation through it equals the in-process one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.eval.test_closed_loop import sim_run  # noqa: F401  (the tiny trained run fixture)
from vla_sensor.serving.protocol import TOKEN_ENV

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _start_server(run_dir: Path, token: str) -> tuple[subprocess.Popen, list[str], threading.Event]:
    """serve.py on a free port (port=0); its output lines collected as they come."""
    env = {**os.environ, TOKEN_ENV: token}
    proc = subprocess.Popen([sys.executable, str(REPO / "serve.py"), f"run_dir={run_dir}", "port=0"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if " on ws://" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    return proc, lines, ready


def test_closed_loop_through_serve_py_equals_in_process(sim_run: Path, tmp_path: Path,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from vla_sensor.eval.closed_loop import evaluate_in_sim
    from vla_sensor.eval.config import SimEvalConfig

    proc, lines, ready = _start_server(sim_run, "loopback-secret")
    try:
        settings = {"episodes": 2, "seed": 3, "progress": False, "episode_seconds": 1.0, "frames": 0}
        local = evaluate_in_sim(sim_run, SimEvalConfig(**settings), output_dir=tmp_path / "local", cpu=True)
        assert ready.wait(60), "".join(lines)
        url = next(line for line in lines if " on ws://" in line).split(" on ")[1].split()[0]
        monkeypatch.setenv(TOKEN_ENV, "loopback-secret")
        served = evaluate_in_sim(sim_run, SimEvalConfig(**settings, policy_server=url),
                                 output_dir=tmp_path / "served", cpu=True)
        assert served.summary["per_episode"] == local.summary["per_episode"]
        assert served.summary["settings"]["views"] == local.summary["settings"]["views"]
        assert all(np.isfinite(e["peak_force_n"]) for e in served.summary["per_episode"])
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0 and "stopped" in "".join(lines), "".join(lines)[-3000:]
