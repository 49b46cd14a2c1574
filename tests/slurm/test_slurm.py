"""Sweeps, DDP and preemption through ``hydra/launcher=submitit_slurm`` on a real one-node SLURM.

Every job is the toy task with slow DataLoader workers (``tests.slurm.slow_toy``), so a signal lands
mid-training and reaches the workers mid-load, as on a cluster. The preempted runs are compared with
uninterrupted runs of the same config: the same metric steps, once each, and the same final weights.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.slurm.cluster import Cluster
from tests.training.helpers import REPO, env, read_metrics
from vla_sensor.training.checkpointing import latest_checkpoint

pytestmark = pytest.mark.slow

STEPS = 60  # 40 ms per step with 2 workers of 10 ms per sample: a signal at step 8 lands mid-run
SAVE_EVERY = 25  # periodic checkpoints at 25 and 50; the stop step's own checkpoint is what resumes
TRAIN = ["trainer.components=tests.slurm.slow_toy.build", "data.batch_size=8", "logger=jsonl",
         "trainer.progress_bar=false", "trainer.log_every=1", "trainer.val_every=0", "trainer.warmup_steps=2",
         f"trainer.max_steps={STEPS}", f"trainer.save_every={SAVE_EVERY}", "trainer.resume=auto", "cpu=true"]
LAUNCHER = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
DDP = ["hydra.launcher.tasks_per_node=2", "hydra.launcher.mem_gb=4", "trainer.expected_world_size=2",
       "data.num_workers=1"]
SIGNAL_AT = 8


@dataclass
class Sweep:
    dir: Path
    returncode: int
    output: str
    job_ids: list[str]

    def run(self, num: int = 0) -> Path:
        return self.dir / str(num)

    def job_logs(self) -> str:
        """Every task's submitit log (stdout and stderr, all incarnations of the job)."""
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.dir / ".submitit").rglob("*_log.*")))


def sweep(slurm: Cluster, tmp: Path, overrides: list[str], interrupt=None, timeout: float = 300,
          sweep_dir: Path | None = None, **extra_env: str) -> Sweep:
    """``train.py -m`` on the cluster; ``interrupt(job_id)`` once job 0 logged step ``SIGNAL_AT``."""
    sweep_dir = sweep_dir or tmp / "sweep"
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "driver.log"
    known = set(slurm.track(sweep_dir / ".submitit"))
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), "-m", *LAUNCHER, *overrides,
                                 f"hydra.sweep.dir={sweep_dir}"], cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
                                env=env(SLURM_CONF=str(slurm.conf), **extra_env))
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                assert time.monotonic() < deadline, f"the sweep driver did not end in {timeout} s:\n{log.read_text()[-3000:]}"
                jobs = [j for j in slurm.track(sweep_dir / ".submitit") if j not in known]
                if interrupt is not None and jobs and _logged_steps(sweep_dir / "0") >= SIGNAL_AT:
                    interrupt(jobs[0])
                    interrupt = None
                for job in jobs:
                    slurm.release_requeued(job)
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert interrupt is None, "the job ended before the signal could be sent"
    jobs = [j for j in slurm.track(sweep_dir / ".submitit") if j not in known]
    return Sweep(sweep_dir, proc.returncode, log.read_text(), jobs)


def _logged_steps(run: Path) -> int:
    try:
        return sum(1 for line in (run / "metrics.jsonl").read_text().splitlines() if line.endswith("}"))
    except FileNotFoundError:
        return 0


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def _assert_same_weights(run: Path, reference: Path) -> None:
    got, want = _weights(run), _weights(reference)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), f"{name} differs from the uninterrupted run's"


def _assert_ok(result: Sweep) -> None:
    assert result.returncode == 0, result.output[-4000:]
    assert "Traceback" not in result.output, result.output[-4000:]


def _stop_steps(logs: str, signame: str) -> list[int]:
    return [int(s) for s in re.findall(rf"stop requested \({signame}\) at step (\d+)", logs)]


def _assert_preempted_once_and_resumed(slurm: Cluster, result: Sweep, signame: str, reference: Path) -> int:
    """One stop at step s mid-run, one requeue, a resume from step s's checkpoint, the reference's end."""
    _assert_ok(result)
    run, logs = result.run(), result.job_logs()
    assert "DataLoader worker" not in logs and "A temporary saved file already exists" not in logs, logs[-4000:]
    stops = sorted(set(_stop_steps(logs, signame)))
    assert len(stops) == 1 and SIGNAL_AT <= stops[0] < STEPS, stops
    step = stops[0]
    assert f"checkpoints/step_{step:07d} at step {step} " in logs, "the requeued job did not resume from the stop step"
    assert slurm.job(result.job_ids[0]).get("Restarts") == "1"
    assert [r["step"] for r in read_metrics(run)] == list(range(1, STEPS + 1))  # each step once
    _assert_same_weights(run, reference)
    return step


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted single-process run (on this machine, no SLURM: the same computation)."""
    tmp = tmp_path_factory.mktemp("straight")
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *TRAIN, "data.num_workers=2",
                           f"output_dir={tmp / 'run'}"], cwd=tmp, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"


@pytest.fixture(scope="module")
def ddp_straight(slurm: Cluster, tmp_path_factory) -> tuple[Sweep, Path]:
    """An uninterrupted 2-task DDP job (its trace: the sample indices and final parameters per rank)."""
    tmp = tmp_path_factory.mktemp("ddp")
    result = sweep(slurm, tmp, [*TRAIN, *DDP], VLA_TOY_TRACE_DIR=str(tmp / "trace"))
    return result, tmp / "trace"


def test_a_two_job_sweep_runs_both_jobs_to_final(slurm: Cluster, tmp_path: Path) -> None:
    result = sweep(slurm, tmp_path, [*TRAIN, "trainer.max_steps=3", "data.num_workers=0", "seed=1,2"])
    _assert_ok(result)
    assert len(result.job_ids) == 2
    for num in (0, 1):
        assert (result.run(num) / "final" / "model.safetensors").is_file()
        assert [r["step"] for r in read_metrics(result.run(num))] == [1, 2, 3]
    assert not torch.equal(_weights(result.run(0))["net.0.weight"], _weights(result.run(1))["net.0.weight"])


def test_two_slurm_tasks_form_one_ddp_group(ddp_straight: tuple[Sweep, Path]) -> None:
    result, trace = ddp_straight
    _assert_ok(result)
    assert (result.run() / "final" / "model.safetensors").is_file()
    assert "(2 process(es)" in result.job_logs()
    epoch = 256 // 2  # the toy's samples per rank and epoch
    seen = [json.loads((trace / f"rank{r}_indices.json").read_text())[:epoch] for r in (0, 1)]
    assert sorted(seen[0] + seen[1]) == list(range(256)), "the two tasks did not split the epoch"
    params = [torch.load(trace / f"rank{r}_params.pt") for r in (0, 1)]
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0]), "the ranks' weights diverged"


def test_usr2_preemption_checkpoints_requeues_once_and_resumes_exactly(
        slurm: Cluster, straight: Path, tmp_path: Path) -> None:
    result = sweep(slurm, tmp_path, [*TRAIN, "data.num_workers=2"],
                   interrupt=lambda job: slurm.scancel("--signal=USR2", job))  # what SLURM sends before the limit
    _assert_preempted_once_and_resumed(slurm, result, "SIGUSR2", straight)
    logs = result.job_logs()
    caught = set(re.findall(r"^submitit WARNING .* Caught signal SIGUSR2.*$", logs, flags=re.M))  # .out repeats .err
    assert len(caught) == 1, f"submitit's handler must run once, in the main process: {caught}"
    assert "Requeued job" in logs


def test_scontrol_requeue_checkpoints_and_the_requeued_job_resumes_exactly(
        slurm: Cluster, straight: Path, tmp_path: Path) -> None:
    result = sweep(slurm, tmp_path, [*TRAIN, "data.num_workers=2"],
                   interrupt=lambda job: slurm.scontrol("requeue", job))  # SIGTERM to every process of the job
    _assert_preempted_once_and_resumed(slurm, result, "SIGTERM", straight)


def test_past_max_num_timeout_the_job_is_not_requeued_and_the_same_sweep_resumes_it(
        slurm: Cluster, straight: Path, tmp_path: Path) -> None:
    # submitit counts a signal as the time limit's when it comes within 10 minutes of timeout_min: with
    # timeout_min=1 any signal does. SLURM's own limit stays an hour, so that SLURM's USR2 (sent
    # signal_delay_s before it) does not come at the job's start; the test sends it mid-run.
    limits = ["hydra.launcher.timeout_min=1", "++hydra.launcher.additional_parameters.time=60",
              "hydra.launcher.max_num_timeout=0"]
    result = sweep(slurm, tmp_path, [*TRAIN, "data.num_workers=2", *limits],
                   interrupt=lambda job: slurm.scancel("--signal=USR2", job))
    assert result.returncode != 0 and "Job not requeued because: timed-out too many times" in result.output
    assert slurm.job(result.job_ids[0]).get("Restarts") == "0"
    stops = _stop_steps(result.job_logs(), "SIGUSR2")
    assert len(set(stops)) == 1 and latest_checkpoint(result.run()).name == f"step_{stops[0]:07d}"

    again = sweep(slurm, tmp_path / "again", [*TRAIN, "data.num_workers=2"], sweep_dir=result.dir)  # by hand
    _assert_ok(again)
    assert f"checkpoints/step_{stops[0]:07d} at step {stops[0]} " in again.job_logs()
    assert [r["step"] for r in read_metrics(result.run())] == list(range(1, STEPS + 1))
    _assert_same_weights(result.run(), straight)


def test_ddp_ranks_agree_on_the_stop_step_when_only_one_rank_is_signalled(
        slurm: Cluster, ddp_straight: tuple[Sweep, Path], tmp_path: Path) -> None:
    def usr2_to_rank1(job: str) -> None:
        os.kill(_task_pid(job, rank=1), signal.SIGUSR2)  # to rank 1's main process only

    result = sweep(slurm, tmp_path, [*TRAIN, *DDP], interrupt=usr2_to_rank1)
    reference = ddp_straight[0].run()
    step = _assert_preempted_once_and_resumed(slurm, result, "SIGUSR2", reference)
    logs = result.job_logs()
    assert _stop_steps(logs, "SIGUSR2").count(step) == 2, "both ranks stop at the same step"
    assert "Requeued job" in logs  # rank 0 requeued though only rank 1 was signalled


def _task_pid(job: str, rank: int) -> int:
    """The main process of SLURM task ``rank`` of ``job`` (not one of its DataLoader workers)."""
    job_id = job.split("_")[0]
    candidates = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = dict(kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv)
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        job_matches = job_id in (environ.get("SLURM_JOB_ID"), environ.get("SLURM_ARRAY_JOB_ID"))
        if job_matches and environ.get("SLURM_PROCID") == str(rank) and "SUBMITIT_EXECUTOR" in environ:
            candidates[int(proc.name)] = ppid
    mains = [pid for pid, ppid in candidates.items() if ppid not in candidates]
    assert len(mains) == 1, f"task {rank} of job {job}: {candidates}"
    return mains[0]
