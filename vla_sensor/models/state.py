"""The robot's proprioceptive state into the fusion: normalised by training-split statistics, projected.

The state (e.g. the tip position in mm) enters in robot units; its mean/std are buffers, so they are
saved with the weights and a deployed policy normalises exactly as training did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vla_sensor.models.action_head import ActionNormalizer


def state_stats_of(stats: Any) -> Any:
    """The ``state`` statistics carried by action statistics (an ``ActionStats.state`` or a ``"state"`` key)."""
    if stats is None:
        return None
    if isinstance(stats, Mapping):
        return stats.get("state")
    return getattr(stats, "state", None)


class StateProjector(nn.Module):
    """(B, S) state in robot units -> (B, out_dim) feature: normalise, two-layer MLP, LayerNorm."""

    def __init__(self, state_dim: int, out_dim: int) -> None:
        super().__init__()
        if state_dim < 1:
            raise ValueError(f"state_dim must be >= 1 for a state projector, got {state_dim}")
        self.state_dim, self.out_dim = int(state_dim), int(out_dim)
        self.normalizer = ActionNormalizer(state_dim)
        self.net = nn.Sequential(nn.Linear(state_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim),
                                 nn.LayerNorm(out_dim))

    def set_stats(self, stats: Any) -> None:
        try:
            self.normalizer.set_stats(stats)
        except ValueError as exc:
            raise ValueError(f"state statistics: {exc}") from None

    def forward(self, batch: Mapping[str, Any], device: torch.device) -> Tensor:
        state = batch.get("state")
        if state is None:
            raise ValueError(f"the model was trained with a {self.state_dim}-dim proprioceptive state: the batch "
                             f"needs 'state' (B, {self.state_dim}); got keys {sorted(batch)}")
        state = torch.as_tensor(state).to(device, torch.float32)
        if state.dim() != 2 or state.shape[1] != self.state_dim:
            raise ValueError(f"batch 'state' must be (B, {self.state_dim}), got {tuple(state.shape)}")
        return self.net(self.normalizer.normalize(state))
