"""Action-error metrics accumulated over batches, in robot units.

The accumulator keeps sums and counts (not per-sample lists) so that it is cheap, exact under
any batching, and can be reduced across DDP ranks by summing its tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

_GROUPS = ("all", "with_sensor", "without_sensor")


@dataclass
class ActionErrorAccumulator:
    """Sums of |error| and error² per (group, horizon step, action dim), with valid-step counts.

    Padded steps (``action_is_pad``) are excluded everywhere, so a trajectory's tail is never
    scored against the repeated last action.
    """

    horizon: int
    action_dim: int
    abs_sum: torch.Tensor = field(init=False)
    sq_sum: torch.Tensor = field(init=False)
    count: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        shape = (len(_GROUPS), self.horizon, self.action_dim)
        self.abs_sum = torch.zeros(shape, dtype=torch.float64)
        self.sq_sum = torch.zeros(shape, dtype=torch.float64)
        self.count = torch.zeros((len(_GROUPS), self.horizon), dtype=torch.float64)

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        is_pad: torch.Tensor,
        has_sensor: torch.Tensor,
    ) -> None:
        """Add a batch: ``pred``/``target`` (B, horizon, A), ``is_pad`` (B, horizon), ``has_sensor`` (B,)."""
        if pred.shape != target.shape or pred.shape[1:] != (self.horizon, self.action_dim):
            raise ValueError(
                f"expected predictions and targets of shape (B, {self.horizon}, {self.action_dim}), "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        err = (pred.detach().double().cpu() - target.detach().double().cpu())
        valid = (~is_pad.bool().cpu()).double()  # (B, H)
        sensor = has_sensor.bool().cpu()
        for g, rows in enumerate((torch.ones_like(sensor), sensor, ~sensor)):
            w = valid * rows.double()[:, None]  # (B, H)
            self.abs_sum[g] += (err.abs() * w[..., None]).sum(0)
            self.sq_sum[g] += (err.square() * w[..., None]).sum(0)
            self.count[g] += w.sum(0)

    def state_tensors(self) -> list[torch.Tensor]:
        """The tensors to sum across ranks (in place) before :meth:`summary`."""
        return [self.abs_sum, self.sq_sum, self.count]

    def summary(self) -> dict[str, Any]:
        """L1 and MSE overall, per horizon step and per action dimension, for each sensor group."""
        out: dict[str, Any] = {}
        for g, name in enumerate(_GROUPS):
            n_steps = self.count[g]  # (H,)
            n_total = float(n_steps.sum())
            if n_total == 0:
                out[name] = {"num_action_steps": 0}
                continue
            abs_sum, sq_sum = self.abs_sum[g], self.sq_sum[g]
            denom_h = (n_steps * self.action_dim).clamp_min(1)
            out[name] = {
                "num_action_steps": int(n_total),
                "l1": float(abs_sum.sum() / (n_total * self.action_dim)),
                "mse": float(sq_sum.sum() / (n_total * self.action_dim)),
                "l1_per_horizon_step": (abs_sum.sum(1) / denom_h).tolist(),
                "mse_per_horizon_step": (sq_sum.sum(1) / denom_h).tolist(),
                "l1_per_action_dim": (abs_sum.sum(0) / n_total).tolist(),
                "mse_per_action_dim": (sq_sum.sum(0) / n_total).tolist(),
            }
        return out
