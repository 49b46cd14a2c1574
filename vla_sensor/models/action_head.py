"""Action chunk head, action normalisation and the padded-step-masked loss."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn


def stats_to_dict(stats: Any) -> dict[str, list[float]]:
    """Accept a mapping name -> floats or any object with ``to_dict()`` (e.g. ``ActionStats``)."""
    if hasattr(stats, "to_dict") and not isinstance(stats, Mapping):
        stats = stats.to_dict()
    if not isinstance(stats, Mapping):
        raise TypeError(f"action stats must be a mapping or have to_dict(), got {type(stats).__name__}")
    out: dict[str, list[float]] = {}
    for k, v in stats.items():
        if isinstance(v, Tensor):
            v = v.detach().cpu().tolist()
        elif hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, list | tuple) and all(isinstance(x, int | float) for x in v):
            out[str(k)] = [float(x) for x in v]
        elif isinstance(v, int | float | str | bool) or v is None:
            out[str(k)] = v  # metadata (e.g. a count) travels along in action_stats.json
    return out


class ActionNormalizer(nn.Module):
    """Mean/std action normalisation. The statistics are buffers, so they travel with the weights."""

    def __init__(self, action_dim: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.action_dim = int(action_dim)
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(action_dim))
        self.register_buffer("std", torch.ones(action_dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.extra: dict[str, Any] = {}

    def set_stats(self, stats: Any) -> None:
        d = stats_to_dict(stats)
        missing = [k for k in ("mean", "std") if k not in d]
        if missing:
            raise ValueError(f"action stats need 'mean' and 'std' (got keys {sorted(d)})")
        mean = torch.tensor(d["mean"], dtype=torch.float32)
        std = torch.tensor(d["std"], dtype=torch.float32)
        for key, t in (("mean", mean), ("std", std)):
            if t.shape != (self.action_dim,):
                raise ValueError(f"action stats {key!r} has {t.numel()} values, expected action_dim={self.action_dim}")
            if not torch.isfinite(t).all():
                raise ValueError(f"action stats {key!r} contains NaN/inf: {d[key]}")
        if (std < 0).any():
            raise ValueError(f"action stats 'std' must be >= 0, got {d['std']}")
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.initialized.fill_(True)
        self.extra = {k: v for k, v in d.items() if k not in ("mean", "std")}

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), **self.extra}

    def _scale(self) -> Tensor:
        # A dimension constant over the training split (std ~ 0) is left in robot units: dividing by
        # a tiny std would turn any other value of it at validation time into a huge error.
        return torch.where(self.std > self.eps, self.std, torch.ones_like(self.std))

    def normalize(self, actions: Tensor) -> Tensor:
        return (actions - self.mean) / self._scale()

    def denormalize(self, actions: Tensor) -> Tensor:
        return actions * self._scale() + self.mean


class ActionHead(nn.Module):
    """MLP from the fused feature to a (horizon, action_dim) chunk in normalised units."""

    def __init__(
        self, in_dim: int, action_dim: int, horizon: int, hidden_dim: int = 256, num_layers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"head_num_layers must be >= 1, got {num_layers}")
        self.action_dim, self.horizon = int(action_dim), int(horizon)
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            dim = hidden_dim
        self.net = nn.Sequential(*layers)
        self.out = nn.Linear(dim, horizon * action_dim)
        nn.init.normal_(self.out.weight, std=0.02 / math.sqrt(max(1, dim / 64)))
        nn.init.zeros_(self.out.bias)

    def forward(self, feature: Tensor) -> Tensor:
        return self.out(self.net(feature)).view(-1, self.horizon, self.action_dim)


LOSSES = ("l1", "mse", "huber")


def masked_action_loss(
    pred: Tensor,
    target: Tensor,
    is_pad: Tensor | None,
    kind: str = "l1",
    weights: Tensor | None = None,
    huber_delta: float = 1.0,
) -> dict[str, Tensor]:
    """Mean L1 / MSE / Huber (smooth L1) over the valid (non-padded) steps and the action dims.

    ``weights`` (A,): per-dimension weights, the loss being the weighted mean over dimensions (all 1:
    the plain mean). Returns the selected ``loss`` plus ``l1`` and ``mse`` (masked, unweighted) for
    logging. A batch whose steps are all padded gives a zero loss that still has a gradient path.
    """
    if pred.shape != target.shape:
        raise ValueError(f"predicted actions {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape")
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {'/'.join(LOSSES)}, got {kind!r}")
    if is_pad is None:
        valid = torch.ones(pred.shape[:2], dtype=pred.dtype, device=pred.device)
    else:
        if is_pad.shape != pred.shape[:2]:
            raise ValueError(f"action_is_pad must have shape {tuple(pred.shape[:2])}, got {tuple(is_pad.shape)}")
        valid = (~is_pad.bool()).to(pred.dtype)
    w = valid.unsqueeze(-1)
    denom = (valid.sum() * pred.shape[-1]).clamp_min(1.0)
    diff = pred - target
    l1 = (diff.abs() * w).sum() / denom
    mse = (diff.square() * w).sum() / denom
    if kind == "l1":
        per = diff.abs()
    elif kind == "mse":
        per = diff.square()
    else:
        per = torch.nn.functional.huber_loss(pred, target, reduction="none", delta=float(huber_delta))
    if weights is None:
        loss = (per * w).sum() / denom
    else:
        dim_w = weights.to(pred.dtype)
        loss = (per * w * dim_w).sum() / (valid.sum() * dim_w.sum()).clamp_min(1e-12)
    return {"loss": loss, "l1": l1.detach(), "mse": mse.detach()}
