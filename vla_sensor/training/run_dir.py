"""One run, one directory: rank 0 decides it, every other rank follows, and no other run writes there.

Hydra's ``${now:}`` is evaluated in each process, so ranks started a second apart would otherwise
write into different directories. Rank 0 picks the directory and broadcasts it. Rank 0 also holds
``run.lock`` in it for the run's lifetime, so a second ``train.py`` on the same ``output_dir`` (a
resubmitted job whose first copy still runs) is refused at start-up instead of interleaving its
metrics and checkpoints with the first one's.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import tempfile
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Sections whose change makes an existing checkpoint unusable (shapes, normalisation, parameters);
# trainer.stage too (it changes which parameters the optimizer state belongs to).
# Data loading knobs (workers, caching) may change between a run and its resume.
COMPATIBILITY_SECTIONS = ("model", "encoder", "data")
HARMLESS_DATA_KEYS = frozenset(
    {"root", "num_workers", "cache", "cache_strategy", "cache_dir", "pin_memory", "prefetch_factor",
     "persistent_workers", "progress", "show_progress"}
)


def launch_rank() -> int:
    """This process's global rank as set by the launcher (torchrun/accelerate, SLURM), before any init."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def hydra_dir_for_rank(path: str) -> str:
    """Hydra's run directory for this process: ``path`` on rank 0, a throwaway one elsewhere.

    Used as an OmegaConf resolver in ``hydra.run.dir`` so that non-zero ranks of one launch do not
    create stray timestamped directories (with their own ``.hydra/`` and log file) under ``outputs/``.
    """
    if launch_rank() == 0:
        return path
    return str(Path(tempfile.gettempdir()) / "vla_sensor_hydra" / f"rank{launch_rank()}_{os.getpid()}")


def default_run_dir() -> Path:
    """Hydra's output directory when running under Hydra, else ``outputs/<date>/<time>``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return Path("outputs") / datetime.now().strftime("%Y-%m-%d") / datetime.now().strftime("%H-%M-%S")


def decide_run_dir(output_dir: str | None, accelerator) -> Path:
    """Rank 0 chooses the run directory (``output_dir`` or Hydra's), creates it and locks it (released
    by :func:`release_run_dirs`), then broadcasts it; when rank 0 cannot, every rank raises its error."""
    from vla_sensor.training.rank_zero import decided_on_rank0

    def decide() -> str:
        path = (Path(output_dir) if output_dir else default_run_dir()).expanduser().resolve()
        check_writable(path)
        _HELD.append(RunLock.acquire(path))
        return str(path)

    def remote(message: str) -> RunDirBusyError:
        return RunDirBusyError(f"rank 0 could not take the run directory: {message}")

    return Path(decided_on_rank0(accelerator, decide, (OSError, RunDirBusyError), remote))


RUN_LOCK = "run.lock"


class RunDirBusyError(RuntimeError):
    """Another live training holds the run directory."""


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/run.lock`` holding the holder's PID, host and start time.

    The kernel drops the lock when its process dies however it dies (SIGKILL, OOM, node loss on a
    shared filesystem), so a stale lock is taken over; the PID it still names is logged. A clean
    release empties the file. Where the filesystem has no ``flock``, the recorded PID is checked
    instead (a lock from another host is then refused: its process cannot be checked from here).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        path = Path(run_dir) / RUN_LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                holder = _read_holder(fd)
                alive = False  # the kernel says: no process holds it
            except BlockingIOError:
                holder, alive = _read_holder(fd), True
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                holder = _read_holder(fd)
                alive = bool(holder) and (holder.get("host") != socket.gethostname() or _pid_alive(holder.get("pid")))
            if alive:
                raise RunDirBusyError(
                    f"output directory {run_dir} is in use by another training: PID {holder.get('pid', '?')} on "
                    f"host {holder.get('host', '?')} (started {holder.get('started', '?')}) holds {path}. Wait for "
                    "it to end or stop it, or choose another output_dir"
                    + ("" if holder.get("host") == socket.gethostname() else
                       f"; if that process is gone, delete {path}")
                )
        except BaseException:
            os.close(fd)
            raise
        if holder:
            log.warning("%s: taking over the lock of PID %s on host %s, which no longer runs (a killed run)",
                        path, holder.get("pid", "?"), holder.get("host", "?"))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        return cls(path, fd)

    def release(self) -> None:
        """Empty the file and drop the lock (the file stays: deleting it would race a new holder)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:  # a full or read-only disk must not hide the run's own error
            pass
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


_HELD: list[RunLock] = []


def release_run_dirs() -> None:
    """Release the run directory locks this process took (end of a run, and of each multirun job)."""
    while _HELD:
        _HELD.pop().release()


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        holder = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"pid": "?", "host": "?"}
    return holder if isinstance(holder, dict) else {"pid": "?", "host": "?"}


def _pid_alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)  # type: ignore[arg-type]
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and write, fsync and delete a probe file in it, before anything is built.

    A read-only mount, a full disk or a path through a regular file then fails in seconds with the
    directory named, not after the model is built or at the first checkpoint.
    """
    probe = run_dir / f".write_test_{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise OSError(exc.errno, f"output directory {run_dir} is not writable ({exc.strerror or exc}); "
                      "free space there or choose another output_dir") from exc


def sweep_group() -> str | None:
    """A name shared by all jobs of one Hydra multirun (W&B ``group``); None outside a sweep."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        sweep = Path(hc.sweep.dir)
        return f"{hc.job.name}-{sweep.parent.name}_{sweep.name}"
    except ImportError:  # pragma: no cover
        return None


def job_name(run_dir: Path) -> str:
    """A readable run name: the sweep job's overrides, or the run directory's name."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and HydraConfig.get().job.override_dirname:
            return HydraConfig.get().job.override_dirname
    except ImportError:  # pragma: no cover
        pass
    return f"{run_dir.parent.name}_{run_dir.name}"


def _compared(cfg: DictConfig) -> dict:
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    out = {k: container.get(k) for k in COMPATIBILITY_SECTIONS}
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k not in HARMLESS_DATA_KEYS}
    out["trainer"] = {"stage": (container.get("trainer") or {}).get("stage")}  # which parameters train
    return out


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: checkpoint has {a!r}, this run has {b!r}"]


def incompatible_keys(saved_cfg: DictConfig, cfg: DictConfig) -> list[str]:
    """Config keys that differ in a way that makes ``saved_cfg``'s checkpoints unusable for ``cfg``."""
    return _diff(_compared(saved_cfg), _compared(cfg))
