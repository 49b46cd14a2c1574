"""Action (and proprioceptive state) normalization statistics, computed on the training split only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

_FIELDS = ("mean", "std", "min", "max", "q01", "q99")


@dataclass
class ActionStats:
    """Per-dimension statistics of the actions, float32 arrays of shape (A,); ``state``: the same
    statistics of the proprioceptive state (S,), or None when the data has no state."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    state: Optional[ActionStats] = None  # noqa: UP045

    def __post_init__(self) -> None:
        for name in _FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (saved with every checkpoint); the state's under ``"state"`` when present."""
        out: dict[str, Any] = {name: getattr(self, name).tolist() for name in _FIELDS}
        if self.state is not None:
            out["state"] = self.state.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "action stats") -> ActionStats:
        """The inverse of :meth:`to_dict`; files written before states existed (no ``"state"``) load as is."""
        missing = [n for n in _FIELDS if n not in d]
        if missing:
            raise ValueError(f"{where}: missing fields {missing}; expected {list(_FIELDS)}")
        state = d.get("state")
        if state is not None and not isinstance(state, dict):
            raise ValueError(f"{where}: 'state' must be an object of statistics, got {type(state).__name__}")
        return cls(**{n: np.asarray(d[n], np.float32) for n in _FIELDS},
                   state=None if state is None else cls.from_dict(state, f"{where}: state"))


def compute_action_stats(actions_list: Sequence[np.ndarray],
                         states_list: Sequence[np.ndarray] | None = None) -> ActionStats:
    """Statistics over every step of the given (M_i, A) action arrays (pass the training split only),
    with those of the (M_i, S) ``states_list`` as ``state`` when given."""
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
        state=compute_action_stats(states_list) if states_list else None,
    )
