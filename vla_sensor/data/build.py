"""From the ``data`` config to (train dataset, validation dataset, action statistics).

The split is by trajectory (no trajectory contributes to both), and the action statistics come from
the training trajectories only. Missing demo data is generated once, under a file lock (DDP ranks
wait for the first), into a temporary directory renamed into place, so a half-written dataset is
never picked up.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla_sensor.data.errors import DataFormatError, suggest
from vla_sensor.data.format import discover_trajectories
from vla_sensor.data.normalization import ActionStats, compute_action_stats


def _cfg(data_cfg: Any) -> Any:
    """Accept a DataConfig dataclass, a DictConfig or a plain dict."""
    from omegaconf import OmegaConf

    from vla_sensor.data.config import DataConfig

    if isinstance(data_cfg, DataConfig):
        return OmegaConf.structured(data_cfg)
    if isinstance(data_cfg, dict):
        return OmegaConf.merge(OmegaConf.structured(DataConfig), data_cfg)
    return data_cfg


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


def make_reader(reader_cfg: Any) -> Any:
    """Instantiate ``data.reader`` (its ``_target_`` may name a user's own reader class)."""
    from hydra.utils import instantiate

    return instantiate(reader_cfg, _convert_="all")


def build_datasets(
    data_cfg: Any, sample_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> tuple[Any, Any | None, ActionStats]:
    """``(train_ds, val_ds or None, action_stats)`` from ``data.root`` or ``data.trajectory_dirs``."""
    from vla_sensor.data.dataset import InsertionDataset

    cfg = _cfg(data_cfg)
    reader = make_reader(cfg.reader)
    root = None
    if cfg.trajectory_dirs:
        dirs = [Path(d) for d in cfg.trajectory_dirs]  # each checked by reader.read
    else:
        root = Path(cfg.root)
        if not root.is_dir() and cfg.generate_if_missing:
            ensure_demo_data(root, cfg.synthetic)
        dirs = discover_trajectories(reader, root)
    train_dirs, val_dirs = split_trajectories(dirs, cfg.val_fraction, list(cfg.val_dirs), cfg.seed, root)
    if not train_dirs:
        raise DataFormatError("data: no training trajectories left after the validation split")
    strategy = cfg.cache_strategy
    kwargs: dict[str, Any] = {
        "horizon": cfg.horizon,
        "instruction": cfg.instruction,
        "sensor_window_size": cfg.sensor_window_size,
        "view_selection": list(cfg.view_selection) if cfg.view_selection else None,
        "cache_sensor_windows": cfg.cache,
        "sensor_window_seconds": cfg.sensor_window_seconds,
        "adaptive_window": cfg.adaptive_window,
        "cache_strategy": getattr(strategy.name, "value", strategy.name) if cfg.cache else "none",
        "cache_dtype": getattr(strategy.dtype, "value", strategy.dtype),
        "cache_dir": strategy.cache_dir,
        "image_size": list(cfg.image_size) if cfg.image_size else None,
        "reader": reader,
        "sample_transform": sample_transform,
        "progress": cfg.progress,
        "cache_images": bool(cfg.cache and cfg.cache_images),
        "decode_on_device": bool(cfg.cache and strategy.decode_on_device),
    }
    train_ds = InsertionDataset(train_dirs, **kwargs)
    val_ds = InsertionDataset(val_dirs, **kwargs) if val_dirs else None
    stats = compute_action_stats([t.actions for t in train_ds.trajectories])
    return train_ds, val_ds, stats


def build_dataloader(
    dataset: Any, data_cfg: Any, *, train: bool = True, num_replicas: int = 1, rank: int = 0, **kwargs: Any
) -> Any:
    """A DataLoader for ``dataset`` with the config's batch size, workers and length buckets."""
    from vla_sensor.data.loader import make_dataloader

    cfg = _cfg(data_cfg)
    return make_dataloader(
        dataset,
        cfg.batch_size,
        cfg.num_workers,
        shuffle=train,
        bucket_by_length=cfg.bucket_by_length,
        max_rows=cfg.max_rows,
        seed=cfg.seed,
        gather_sensor_in_main=bool(cfg.get("gather_sensor_in_main", True)),
        num_replicas=num_replicas,
        rank=rank,
        **kwargs,
    )
