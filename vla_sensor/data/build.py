"""From the ``data`` config to (train dataset, validation dataset, action statistics).

The split is by trajectory (no trajectory contributes to both), and the action statistics (with the
proprioceptive state's, ``stats.state``) come from the training trajectories only. Missing demo data
is generated once, under a file lock (DDP ranks wait for the first), into a temporary directory
renamed into place, so a half-written dataset is never picked up.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.data.errors import DataFormatError, suggest
from vla_sensor.data.format import discover_trajectories
from vla_sensor.data.normalization import ActionStats, compute_action_stats

log = logging.getLogger(__name__)


def ensure_demo_data(root: str | os.PathLike[str], synthetic: Any) -> Path:
    """Generate the demo dataset at ``root`` unless it exists (one process generates, others wait)."""
    from vla_sensor.data.synthetic import generate_dataset

    root = Path(root)
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    lock = root.parent / f".{root.name}.lock"
    with open(lock, "a+b") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            if not root.is_dir():
                tmp = root.parent / f".{root.name}.tmp{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                generate_dataset(
                    tmp,
                    trajectories=int(synthetic.trajectories),
                    seconds=float(synthetic.seconds),
                    sensor_rate=[float(r) for r in synthetic.sensor_rate],
                    action_rate=float(synthetic.action_rate),
                    image_size=int(synthetic.image_size),
                    views=list(synthetic.views),
                    no_sensor_trajectories=int(synthetic.no_sensor_trajectories),
                    seed=int(synthetic.seed),
                )
                os.replace(tmp, root)
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)
    return root


def split_trajectories(
    dirs: Sequence[Path], val_fraction: float, val_dirs: Sequence[str | os.PathLike[str]] = (), seed: int = 0,
    root: Path | None = None,
) -> tuple[list[Path], list[Path]]:
    """Train and validation trajectory lists (disjoint): explicit ``val_dirs`` or a seeded fraction."""
    dirs = [Path(d) for d in dirs]
    if val_dirs:
        by_name = {d.name: d for d in dirs}
        val = []
        for v in val_dirs:
            p = Path(v)
            if not p.is_absolute() and root is not None and not p.exists():
                p = root / p
            if p.resolve() not in {d.resolve() for d in dirs}:
                match = by_name.get(Path(v).name)
                if match is None:
                    raise DataFormatError(
                        f"data.val_dirs: {v} is not one of the trajectories{suggest(Path(v).name, by_name)}"
                    )
                p = match
            val.append(p)
        val_set = {p.resolve() for p in val}
        return [d for d in dirs if d.resolve() not in val_set], val
    if not 0 <= val_fraction < 1:
        raise DataFormatError(f"data.val_fraction: expected 0 <= value < 1, got {val_fraction}")
    n_val = round(val_fraction * len(dirs))
    if val_fraction > 0 and len(dirs) > 1:
        n_val = min(max(n_val, 1), len(dirs) - 1)
    else:
        n_val = 0
    order = np.random.default_rng(seed).permutation(len(dirs))
    val_idx = set(order[:n_val].tolist())
    return [d for i, d in enumerate(dirs) if i not in val_idx], [d for i, d in enumerate(dirs) if i in val_idx]


def make_reader(data_cfg: Any) -> Any:
    """The reader of ``data.format``: ``data.reader`` (its ``_target_`` may name a user's own class) for
    the native layout, the LeRobot reader with ``data.lerobot`` for a LeRobot dataset."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if getattr(data_cfg.format, "value", data_cfg.format) == "lerobot":
        from vla_sensor.data.lerobot import LeRobotReader

        return LeRobotReader(**OmegaConf.to_container(data_cfg.lerobot))
    return instantiate(data_cfg.reader, _convert_="all")


def build_datasets(data_cfg: Any) -> tuple[Any, Any | None, ActionStats]:
    """``(train_ds, val_ds or None, action_stats)`` from ``data.root`` or ``data.trajectory_dirs``."""
    from vla_sensor.data.config import data_config
    from vla_sensor.data.dataset import InsertionDataset

    cfg = data_config(data_cfg)
    reader = make_reader(cfg)
    root = None
    if cfg.trajectory_dirs:
        dirs = [Path(d) for d in cfg.trajectory_dirs]  # each checked by reader.read
    else:
        root = Path(cfg.root)
        if not root.is_dir() and cfg.generate_if_missing and cfg.format.value == "native":
            ensure_demo_data(root, cfg.synthetic)
        dirs = discover_trajectories(reader, root)
    train_dirs, val_dirs = split_trajectories(dirs, cfg.val_fraction, list(cfg.val_dirs), cfg.seed, root)
    if not train_dirs:
        raise DataFormatError("data: no training trajectories left after the validation split")
    if not val_dirs and cfg.val_fraction > 0:
        log.warning("data: only %d trajectory (%s): no validation split is possible (data.val_fraction=%g needs at "
                    "least 2); training without validation, so no val_loss is reported", len(dirs), dirs[0],
                    cfg.val_fraction)
    train_ds = InsertionDataset(train_dirs, cfg, reader=reader)
    val_ds = InsertionDataset(val_dirs, cfg, reader=reader) if val_dirs else None
    if val_ds is not None and val_ds.state_dim != train_ds.state_dim:
        raise DataFormatError(
            f"data: the training trajectories have a {train_ds.state_dim}-dim state (e.g. "
            f"{train_ds.trajectories[0].path}) but the validation ones a {val_ds.state_dim}-dim one (0: none; e.g. "
            f"{val_ds.trajectories[0].path}); expected states of one size in all trajectories or in none"
        )
    states = [t.states for t in train_ds.trajectories] if train_ds.state_dim else None
    stats = compute_action_stats([t.actions for t in train_ds.trajectories], states)
    return train_ds, val_ds, stats
