"""One run, one directory: rank 0 decides it, every other rank follows.

Hydra's ``${now:}`` is evaluated in each process, so ranks started a second apart would otherwise
write into different directories. Rank 0 picks the directory and broadcasts it.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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
    """Rank 0 chooses the run directory (``output_dir`` or Hydra's), broadcasts it, and creates it."""
    from accelerate.utils import broadcast_object_list

    chosen = [None]
    if accelerator.is_main_process:
        path = Path(output_dir) if output_dir else default_run_dir()
        chosen = [str(path.expanduser().resolve())]
        check_writable(Path(chosen[0]))
    if accelerator.num_processes > 1:
        broadcast_object_list(chosen, from_process=0)
    return Path(chosen[0])


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
