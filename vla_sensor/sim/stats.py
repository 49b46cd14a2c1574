"""Confidence intervals for success rates."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0 or n
    successes, which matters for the small episode counts of closed-loop evaluations.
    """
    if trials < 1:
        raise ValueError(f"trials: expected at least 1 episode, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes: expected 0..{trials}, got {successes}")
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
