"""What the loop trains: model, datasets, collate function and export, built from the config.

The loop only needs this small bundle, so the training machinery can be checked against a toy task
(``trainer.components=vla_sensor.training.toy.build_toy_components``) without the VLA model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from vla_sensor.training.config import choice


@dataclass
class Components:
    """``model(batch)`` returns a dict with a scalar ``loss``; ``export(model, dir)`` writes final weights."""

    model: nn.Module
    train_dataset: Dataset
    val_dataset: Dataset | None
    collate_fn: Callable | None = None  # None: the batch contract's collate_samples
    export: Callable[[nn.Module, Path], None] | None = None
    # JSON-able extras written into the export (e.g. normalisation statistics).
    export_files: dict[str, Any] = field(default_factory=dict)
    # Called on every process once training ended (diagnostics in tests).
    on_end: Callable[[nn.Module, Any], None] | None = None


def cache_nbytes(dataset: Dataset | None) -> int:
    """Bytes held by the dataset's sensor cache (0 when it has none)."""
    value = getattr(dataset, "cache_nbytes", 0) if dataset is not None else 0
    return int(value() if callable(value) else value or 0)


def build_components(cfg, accelerator) -> Components:
    """The VLA policy and the insertion datasets (``data``, ``encoder``, ``model``, ``trainer.stage``).

    Rank 0 builds the datasets first (it may generate the demo recordings or the mmap cache); the
    other ranks then find them ready. The model's Qwen-VL pre-processing runs in the DataLoader workers,
    or, with ``trainer.feature_cache``, not at all: the samples carry the stored backbone features.
    """
    from vla_sensor.data.build import build_datasets

    with accelerator.main_process_first():
        train_ds, val_ds, stats = build_datasets(cfg.data)
    model = build_policy(cfg, train_ds, stats)
    transform = model.build_sample_transform(train_ds.view_selection, train_ds.image_size)
    for ds in (train_ds, val_ds):
        if ds is not None:
            ds.input_transform = transform
    if cfg.trainer.feature_cache:  # stage 1: stored backbone features replace the images (rank 0 builds)
        from vla_sensor.training.feature_cache import attach

        split = attach(cfg, accelerator, model, {"train": train_ds, "val": val_ds})
        train_ds, val_ds = split["train"], split["val"]
    return Components(model=model, train_dataset=train_ds, val_dataset=val_ds)


def build_policy(cfg, dataset, stats):
    """The policy of a run's config: built (stage 1) or loaded from stage 1 (stage 2), frozen for the
    stage, activation checkpointing set. Sizes that follow the data (action dimension, sensor channels,
    views, image size) come from ``dataset``. Also used to rebuild a model from a training checkpoint."""
    from vla_sensor.models.vla import QwenVLAWithSensor, build_model, stage_kwargs

    stage = choice(cfg.trainer.stage.name)
    init_from = cfg.trainer.stage.init_from
    if init_from:
        model = QwenVLAWithSensor.from_pretrained(_stage1_export(Path(init_from)))
    else:
        if stage != "stage1":
            raise ValueError(f"trainer.stage={stage} needs trainer.stage.init_from=<a stage-1 run or its final/>")
        model = build_model(cfg.model, cfg.encoder, action_dim=dataset.action_dim, horizon=dataset.horizon,
                            sensor_channels=dataset.num_channels, view_selection=dataset.view_selection,
                            image_size=dataset.image_size, action_stats=stats, state_dim=state_dim_of(cfg, dataset))
    kwargs = stage_kwargs(cfg.model)
    if stage == "stage1":
        model.configure_stage(1, **kwargs)
    else:
        model.configure_stage(2, **{**kwargs, "llm": "lora" if stage == "stage2_lora" else "full"})
    model.set_gradient_checkpointing(cfg.encoder.gradient_checkpointing, cfg.trainer.checkpointing.backbone)
    return model


def state_dim_of(cfg, dataset) -> int:
    """The state size the model reads: the data's (``model.use_state`` unset or true), or 0 (false)."""
    available = int(getattr(dataset, "state_dim", 0) or 0)
    use = cfg.model.get("use_state")
    if use is None:
        return available
    if use and available == 0:
        raise ValueError("model.use_state=true but the training data has no proprioceptive state (no 'states' in "
                         "actions.npz, no LeRobot state feature); record it or set model.use_state=null")
    return available if use else 0


def _stage1_export(path: Path) -> Path:
    """A stage-1 run directory or its ``final/`` export -> the export directory."""
    if (path / "final").is_dir():
        path = path / "final"
    if not path.is_dir():
        raise FileNotFoundError(f"trainer.stage.init_from={path}: no such directory")
    return path
