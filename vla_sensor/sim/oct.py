"""Simulated OCT A-lines from the tip-to-surface distance along the needle axis.

A forward-looking fibre in the needle tip images ``RANGE_MM`` ahead of the tip in ``SAMPLES`` depth
bins. For a signed distance ``d`` from the tip to the tissue's rest surface (``d > 0``: the surface is
ahead, in air; ``d <= 0``: the tip is ``-d`` deep in tissue), bin depth ``s`` (mm ahead of the tip):

- tissue starts at ``s0 = max(d, 0)``; everything deeper is attenuated by Beer–Lambert round trip
  ``exp(-2 * MU_PER_MM * (s - s0))``;
- surface echo: a Gaussian axial point-spread (``PSF_MM``) of height ``SURFACE_ECHO`` at ``s = d``
  while the surface is ahead of the tip;
- a subsurface layer ``LAYER_DEPTH_MM`` under the rest surface, at ``s = d + LAYER_DEPTH_MM``, height
  ``LAYER_ECHO`` (still visible after contact: it tells how deep the tip is);
- tissue backscatter ``BACKSCATTER`` for ``s >= s0``, multiplied by fully developed speckle
  (exponentially distributed intensity, mean 1);
- additive detector noise, Gaussian with standard deviation ``NOISE``.
"""

from __future__ import annotations

import numpy as np

SAMPLES = 1025
RANGE_MM = 6.0
PSF_MM = 0.02
MU_PER_MM = 0.25
SURFACE_ECHO = 1.0
LAYER_DEPTH_MM = 3.0
LAYER_ECHO = 1.0
BACKSCATTER = 0.1
NOISE = 0.02

_DEPTHS = np.linspace(0.0, RANGE_MM, SAMPLES, dtype=np.float32)


def alines(distance_mm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, SAMPLES) float32 A-lines for n signed tip-to-surface distances (mm)."""
    d = np.asarray(distance_mm, np.float32).reshape(-1, 1)
    s = _DEPTHS[None, :]
    s0 = np.maximum(d, 0.0)
    inside = s >= s0
    atten = np.where(inside, np.exp(-2.0 * MU_PER_MM * (s - s0)), 0.0).astype(np.float32)
    peaks = SURFACE_ECHO * (d > 0) * np.exp(-0.5 * ((s - d) / PSF_MM) ** 2)
    peaks = peaks + LAYER_ECHO * np.exp(-0.5 * ((s - d - LAYER_DEPTH_MM) / PSF_MM) ** 2)
    speckle = rng.standard_exponential(size=(d.shape[0], SAMPLES), dtype=np.float32)
    out = atten * (peaks + BACKSCATTER * speckle)
    out += NOISE * rng.standard_normal(size=out.shape, dtype=np.float32)
    return out.astype(np.float32, copy=False)
