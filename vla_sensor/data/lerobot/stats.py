"""The statistics LeRobot's normalization reads (``meta/stats.json`` and the episodes' ``stats/*`` columns).

Per feature: min, max, mean, std (population), count (frames) and the quantiles q01, q10, q50, q90,
q99, reduced over frames (and, for a (k, C) feature, over its k samples too: one value per channel).
Images: per RGB channel in [0, 1], shaped (3, 1, 1), from at most ``MAX_IMAGES`` evenly spaced frames.
Episodes are combined as LeRobot combines them: count-weighted mean and variance, min of mins, max
of maxes, count-weighted quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
MAX_IMAGES = 100


def _stats(values: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """Stats of (n, C) float64 ``values`` over axis 0."""
    out = {
        "min": values.min(axis=0), "max": values.max(axis=0),
        "mean": values.mean(axis=0), "std": values.std(axis=0), "count": np.array([count]),
    }
    qs = np.quantile(values, list(QUANTILES.values()), axis=0)
    out.update({name: q for name, q in zip(QUANTILES, qs, strict=True)})
    return out


def feature_stats(array: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of a numeric per-frame feature, ``array`` of shape (frames, ...) -> one value per last axis."""
    a = np.asarray(array)
    values = a.reshape(len(a), -1) if a.ndim <= 2 else a.reshape(-1, a.shape[-1])
    return _stats(values.reshape(-1, 1) if a.ndim == 1 else values.astype(np.float64), len(a))


def sample_steps(steps: int) -> np.ndarray:
    """At most MAX_IMAGES evenly spaced frame indices."""
    return np.unique(np.linspace(0, steps - 1, min(steps, MAX_IMAGES)).round().astype(int))


def image_stats(images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Stats of (H, W, 3) uint8 images per channel in [0, 1], each shaped (3, 1, 1); count = images."""
    pixels = np.concatenate([np.asarray(im).reshape(-1, 3) for im in images]).astype(np.float64) / 255.0
    stats = _stats(pixels, len(images))
    return {k: v if k == "count" else v.reshape(3, 1, 1) for k, v in stats.items()}


def aggregate(per_episode: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One feature's stats over all episodes."""
    counts = np.array([s["count"][0] for s in per_episode], np.float64)
    total = counts.sum()
    w = counts.reshape(-1, *([1] * np.ndim(per_episode[0]["mean"])))
    means = np.stack([s["mean"] for s in per_episode])
    mean = (means * w).sum(axis=0) / total
    var = ((np.stack([s["std"] for s in per_episode]) ** 2 + (means - mean) ** 2) * w).sum(axis=0) / total
    out = {
        "min": np.min([s["min"] for s in per_episode], axis=0), "max": np.max([s["max"] for s in per_episode], axis=0),
        "mean": mean, "std": np.sqrt(var), "count": np.array([int(total)]),
    }
    for q in QUANTILES:
        out[q] = (np.stack([s[q] for s in per_episode]) * w).sum(axis=0) / total
    return out
