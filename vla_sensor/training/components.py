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


@dataclass
class Components:
    """``model(batch)`` returns a dict with a scalar ``loss``; ``export(model, dir)`` writes final weights."""

    model: nn.Module
    train_dataset: Dataset
    val_dataset: Dataset | None
    collate_fn: Callable | None = None
    export: Callable[[nn.Module, Path], None] | None = None
    # JSON-able extras written into the export (e.g. normalisation statistics).
    export_files: dict[str, Any] = field(default_factory=dict)
    # Called on every process once training ended (diagnostics in tests).
    on_end: Callable[[nn.Module, Any], None] | None = None


def cache_nbytes(dataset: Dataset | None) -> int:
    """Bytes held by the dataset's sensor cache (0 when it has none)."""
    value = getattr(dataset, "cache_nbytes", 0) if dataset is not None else 0
    return int(value() if callable(value) else value or 0)


def build_components(cfg, accelerator) -> Components:  # pragma: no cover - replaced once wired
    raise NotImplementedError("the VLA components are wired in once the data and model packages land")
