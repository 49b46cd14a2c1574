"""The stop signals belong to the training process, not to its DataLoader workers (no SLURM needed).

SLURM signals every process of a job; so does ``kill -- -<pgid>``. These tests send the signals to
the workers themselves, and to a whole process group, on this machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm.slow_toy import SlowToyDataset
from tests.training.helpers import REPO, TOY_ARGS, env, read_metrics
from vla_sensor.data.loader import BatchLoader
from vla_sensor.training.checkpointing import latest_checkpoint


def _loader(tmp_path: Path) -> BatchLoader:
    return BatchLoader(SlowToyDataset(64), [list(range(i, i + 4)) for i in range(0, 64, 4)], num_workers=2)


def _from_a_child(pids: list[int], signum: int) -> None:
    """Send ``signum`` to ``pids`` from another process (not the workers' parent), as SLURM does."""
    subprocess.run(["kill", f"-{signal.Signals(signum).name[3:]}", *map(str, pids)], check=True)


def test_workers_survive_the_stop_signals_and_never_run_the_parents_handlers(tmp_path: Path) -> None:
    ran_in: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: ran_in.append(os.getpid()))
    loader = _loader(tmp_path)
    try:
        it = iter(loader)
        first = next(it)
        workers = list(it._it._workers)  # torch's worker processes
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            _from_a_child([w.pid for w in workers], signum)
        time.sleep(0.3)  # let any (wrong) default action take effect before looking
        rest = list(it)
        assert all(w.is_alive() for w in workers)
        assert sum(len(b["x"]) for b in [first, *rest]) == 64, "a batch was lost"
        assert ran_in == [], "a worker ran the parent's SIGUSR2 handler"
    finally:
        loader.close()
        signal.signal(signal.SIGUSR2, previous)
    assert all(not w.is_alive() for w in workers)


def test_a_sigterm_from_the_parent_still_ends_a_worker(tmp_path: Path) -> None:
    loader = _loader(tmp_path)
    try:
        it = iter(loader)
        next(it)
        worker = it._it._workers[0]
        worker.terminate()  # the DataLoader's own last resort for a worker that did not exit when asked
        worker.join(timeout=30)
        assert not worker.is_alive()
    finally:
        loader.close()


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_checkpoints_and_exits_cleanly(tmp_path: Path) -> None:
    """What SLURM's requeue and scancel do: SIGTERM to the trainer and every DataLoader worker at once."""
    run = tmp_path / "run"
    args = [sys.executable, str(REPO / "train.py"), *TOY_ARGS, "trainer.components=tests.slurm.slow_toy.build",
            "data.num_workers=2", "trainer.log_every=1", "trainer.val_every=0", "trainer.save_every=100000",
            "trainer.max_steps=100000", f"output_dir={run}"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ((run / "metrics.jsonl").exists() and len(read_metrics(run)) >= 3):
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "DataLoader worker" not in err, err[-3000:]
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and int(ckpt.name.split("_")[1]) == read_metrics(run)[-1]["step"]


@pytest.mark.slow
def test_a_worker_that_dies_after_the_stop_request_is_part_of_the_stop(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *TOY_ARGS, "data.num_workers=2",
                           "trainer.components=tests.slurm.slow_toy.build", "trainer.log_every=1", "trainer.val_every=0",
                           "trainer.max_steps=1000", f"output_dir={run}"], cwd=tmp_path, capture_output=True, text=True,
                          env=env(VLA_TOY_STOP_AND_DIE_AT="100"), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and int(ckpt.name.split("_")[1]) == read_metrics(run)[-1]["step"] < 1000
