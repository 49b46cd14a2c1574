"""A one-node SLURM cluster on this machine for the tests: munge, slurmctld and slurmd, as root.

Installed from the distribution's packages when missing (``slurmctld slurmd slurm-client munge``);
configured by a private ``slurm.conf`` (``SLURM_CONF``) in a scratch directory so that nothing under
``/etc/slurm`` is touched; daemons of that directory already running are reused, and only the daemons
started here are stopped again. SLURM delays a requeued job by two minutes (``BeginTime``); the tests
release it at once with ``scontrol update StartTime=now`` (:meth:`Cluster.release_requeued`). No accounting database: ``sacct`` is unavailable, so submitit's driver learns that a job
finished from its result files only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
MUNGE_SOCKET_DIR = Path("/run/munge")


class Unavailable(RuntimeError):
    """SLURM cannot be installed or started here (the reason is the message)."""


def _run(args: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def install() -> None:
    """The Debian packages, with ``apt-get`` (root only)."""
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("SLURM is not installed and cannot be (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        proc = _run(args, timeout=900, env=env)
        if proc.returncode != 0:
            raise Unavailable(f"`{' '.join(args)}` failed: {proc.stderr.strip()[-500:]}")


def munge_works() -> bool:
    if not shutil.which("munge"):
        return False
    cred = _run(["munge", "-n"])
    return cred.returncode == 0 and _run(["unmunge"], input=cred.stdout).returncode == 0


@dataclass
class Cluster:
    """The scratch directory, the ``slurm.conf`` in it and the daemons started (to stop them again)."""

    root: Path
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    started: list[tuple[str, int]] = field(default_factory=list)
    jobs: set[str] = field(default_factory=set)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_conf(self) -> None:
        node_line = _run(["slurmd", "-C"]).stdout.splitlines()[0]  # NodeName=… CPUs=… RealMemory=…
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        (self.root / "spool").mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=vlatest",
            f"SlurmctldHost={self.node}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            "KillWait=20",
            "MinJobAge=600",
            "SchedulerParameters=sched_interval=2",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'slurmd.log'}",
            node_line.strip() + " State=UNKNOWN",
            f"PartitionName=debug Nodes={node_line.split()[0].split('=')[1]} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def start(self, timeout: float = 120) -> None:
        """munged, slurmctld, slurmd (each unless already running), then wait for the node to be idle."""
        install()
        if not munge_works():
            MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
            shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
            for d in ("/var/log/munge", "/var/lib/munge"):
                Path(d).mkdir(parents=True, exist_ok=True)
                shutil.chown(d, "munge", "munge")
            proc = _run(["runuser", "-u", "munge", "--", "munged"])
            if proc.returncode != 0:
                raise Unavailable(f"munged did not start: {proc.stderr.strip()}")
            pid = int((MUNGE_SOCKET_DIR / "munged.pid").read_text())
            self.started.append(("munged", pid))
            _wait(munge_works, 20, "munge")
        env = self.env()
        if not self.conf.is_file() or _run(["scontrol", "ping"], env=env).returncode != 0:
            self.write_conf()
            proc = _run(["slurmctld", "-f", str(self.conf)], env=env)
            if proc.returncode != 0:
                raise Unavailable(f"slurmctld did not start: {proc.stderr.strip()}")
            self.started.append(("slurmctld", _read_pid(self.root / "slurmctld.pid")))
        if not _alive(self.root / "slurmd.pid"):
            proc = _run(["slurmd", "-f", str(self.conf)], env=env)
            if proc.returncode != 0:
                raise Unavailable(f"slurmd did not start: {proc.stderr.strip()}")
            self.started.append(("slurmd", _read_pid(self.root / "slurmd.pid")))
        _wait(self.node_idle, timeout, f"node {self.node} idle (logs in {self.root})")

    def node_idle(self) -> bool:
        proc = _run(["sinfo", "-h", "-o", "%t"], env=self.env())
        state = proc.stdout.strip()
        if state.startswith(("down", "drain")):
            _run(["scontrol", "update", f"nodename={self.node}", "state=resume"], env=self.env())
        return proc.returncode == 0 and state in ("idle", "mix", "alloc")

    def stop(self) -> None:
        """Stop the daemons this cluster started (newest first), by their process ids."""
        for _name, pid in reversed(self.started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.started.clear()

    def cancel_jobs(self) -> None:
        """Cancel the jobs submitted during this session (ids recorded by :meth:`track`)."""
        for job_id in self.jobs:
            _run(["scancel", job_id], env=self.env())

    def track(self, submitit_folder: Path) -> list[str]:
        """The job ids of a sweep (the ``.submitit/<job id>`` folders), remembered for clean-up."""
        ids = sorted(p.parent.name for p in submitit_folder.glob("*/*_submitted.pkl"))
        self.jobs.update(ids)
        return ids

    def scancel(self, *args: str) -> None:
        proc = _run(["scancel", *args], env=self.env())
        if proc.returncode != 0:
            raise RuntimeError(f"scancel {' '.join(args)}: {proc.stderr.strip()}")

    def scontrol(self, *args: str) -> str:
        proc = _run(["scontrol", *args], env=self.env())
        if proc.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def release_requeued(self, job_id: str) -> None:
        """Start a requeued job now rather than after SLURM's requeue delay."""
        if self.job(job_id).get("Reason") == "BeginTime":
            _run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], env=self.env())

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (empty once the job is gone)."""
        proc = _run(["scontrol", "-o", "show", "job", job_id], env=self.env())
        if proc.returncode != 0:
            return {}
        return dict(kv.split("=", 1) for kv in proc.stdout.split() if "=" in kv)


def _alive(pid_file: Path) -> bool:
    """Whether the daemon of ``pid_file`` runs (not merely a zombie left to be reaped)."""
    try:
        status = Path(f"/proc/{int(pid_file.read_text().strip())}/status").read_text()
    except (OSError, ValueError):
        return False
    return "State:\tZ" not in status


def _read_pid(path: Path) -> int:
    _wait(path.is_file, 20, str(path))
    for _ in range(50):
        text = path.read_text().strip()
        if text:
            return int(text)
        time.sleep(0.1)
    raise Unavailable(f"{path} stays empty")


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise Unavailable(f"timed out after {timeout:.0f} s waiting for {what}")
