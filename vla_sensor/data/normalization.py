"""Action normalization statistics, computed on the training split only (never on validation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_FIELDS = ("mean", "std", "min", "max", "q01", "q99")


@dataclass
class ActionStats:
    """Per-dimension statistics of the actions, float32 arrays of shape (A,)."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    def __post_init__(self) -> None:
        for name in _FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-friendly form (saved with every checkpoint)."""
        return {name: getattr(self, name).tolist() for name in _FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionStats:
        missing = [n for n in _FIELDS if n not in d]
        if missing:
            raise ValueError(f"action stats: missing fields {missing}; expected {list(_FIELDS)}")
        return cls(**{n: np.asarray(d[n], np.float32) for n in _FIELDS})


def compute_action_stats(actions_list: Sequence[np.ndarray]) -> ActionStats:
    """Statistics over every step of the given (M_i, A) action arrays (pass the training split only)."""
    if not actions_list:
        raise ValueError("compute_action_stats: expected at least one action array (the training split)")
    a = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in actions_list], axis=0)
    return ActionStats(
        mean=a.mean(0),
        std=a.std(0),
        min=a.min(0),
        max=a.max(0),
        q01=np.quantile(a, 0.01, axis=0),
        q99=np.quantile(a, 0.99, axis=0),
    )
