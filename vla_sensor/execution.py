"""Executing predicted action chunks: receding horizon or temporal ensembling (pure numpy).

A policy predicts a chunk of ``horizon`` actions per query. Two ways to turn chunks into one action
per control step:

- ``receding``: execute the first ``execute_steps`` actions of a chunk, then query again. Small
  values react quickly to new observations; large values query the model less often.
- ``ensemble`` (temporal ensembling, as in ACT): query every ``execute_steps`` steps (1 in ACT) and
  average, for the current step, every stored chunk's prediction of it with weights
  ``exp(-ensemble_decay * i)``, ``i = 0`` for the oldest chunk. Smooths the motion across chunks.

Used by the simulator's rollouts and by anything else that drives a robot from chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MODES = ("receding", "ensemble")


@dataclass(frozen=True)
class ExecutionConfig:
    """How chunks become actions; see the module docstring."""

    mode: str = "receding"
    execute_steps: int = 1
    ensemble_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"execution mode: expected one of {MODES}, got {self.mode!r}")
        if int(self.execute_steps) < 1:
            raise ValueError(f"execute_steps: expected at least 1 action per query, got {self.execute_steps}")
        if not np.isfinite(self.ensemble_decay) or self.ensemble_decay < 0:
            raise ValueError(f"ensemble_decay: expected a finite number >= 0, got {self.ensemble_decay}")


class ActionExecutor:
    """Keeps the chunks of one episode and hands out one action per control step."""

    def __init__(self, config: ExecutionConfig = ExecutionConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget the episode's chunks (call before each episode)."""
        self.step = 0
        self._chunks: list[tuple[int, np.ndarray]] = []  # (step it was predicted at, chunk), oldest first

    def needs_query(self) -> bool:
        """Whether the policy must be queried before :meth:`next_action` at this step."""
        if not self._chunks:
            return True
        start, chunk = self._chunks[-1]
        age = self.step - start
        return age >= self.config.execute_steps or age >= chunk.shape[0]

    def add_chunk(self, chunk: np.ndarray) -> None:
        """Store the chunk predicted at the current step."""
        c = np.asarray(chunk, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] < 1:
            raise ValueError(f"chunk: expected shape (horizon, action_dim), got {c.shape}")
        if not np.isfinite(c).all():
            raise ValueError("chunk: the policy predicted NaN or inf")
        if self._chunks and c.shape[1] != self._chunks[-1][1].shape[1]:
            raise ValueError(f"chunk: action_dim changed from {self._chunks[-1][1].shape[1]} to {c.shape[1]}")
        if self.config.mode == "receding" and self.config.execute_steps > c.shape[0]:
            raise ValueError(
                f"execute_steps: {self.config.execute_steps} is longer than the policy's chunk of {c.shape[0]} actions"
            )
        self._chunks.append((self.step, c))
        if self.config.mode == "receding":
            self._chunks = self._chunks[-1:]
        else:  # drop chunks that no longer cover this step
            self._chunks = [(s, ch) for s, ch in self._chunks if self.step - s < ch.shape[0]]

    def next_action(self) -> np.ndarray:
        """The action for the current step; advances the step counter."""
        if self.needs_query():
            raise RuntimeError("ActionExecutor.next_action: no chunk covers this step; call add_chunk first")
        if self.config.mode == "receding":
            start, chunk = self._chunks[-1]
            action = chunk[self.step - start]
        else:
            rows = [ch[self.step - s] for s, ch in self._chunks if 0 <= self.step - s < ch.shape[0]]
            weights = np.exp(-self.config.ensemble_decay * np.arange(len(rows)))
            action = (weights[:, None] * np.stack(rows)).sum(0) / weights.sum()
        self.step += 1
        return action.astype(np.float32)

    def act(self, predict: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
        """The action for this step, calling ``predict()`` for a new chunk when needed; (action, queried)."""
        queried = self.needs_query()
        if queried:
            self.add_chunk(predict())
        return self.next_action(), queried
