"""Resampling of (left-padded) sensor windows to a fixed number of time steps.

Why not ``F.interpolate``: it has no 1-D cubic mode, and it cannot resample only the valid part of
each sample of a padded batch. Here every output step is computed from per-sample fractional source
positions with a few row gathers and a weighted sum, vectorised over the batch (no loop over B).

Convention (docs/ARCHITECTURE.md): the valid part of sample ``b`` is its LAST ``lengths[b]`` rows.
Positions follow ``align_corners=False``: output step ``i`` of ``n`` samples the source at
``(i + 0.5) * L / n - 0.5`` where ``L`` is the valid length.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vla_sensor.models.encoder_config import InterpolationMode

CUBIC_MIN_SAMPLES = 4
KEYS_A = -0.5  # Keys (1981) cubic convolution; reproduces quadratics exactly (PyTorch bicubic uses -0.75)


def check_lengths(lengths: Tensor, batch: int, time: int) -> Tensor:
    """Validate ``lengths`` against a (batch, time, C) input and return it as int64 on its device."""
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"lengths must have shape ({batch},) (one valid length per sample), got {tuple(lengths.shape)}"
        )
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    lengths = lengths.long()
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > time):
        raise ValueError(
            f"lengths must lie in [0, T={time}], got min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return lengths


def _positions(length: Tensor, target: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Per-sample scale (L / n) and output indices, in the arithmetic PyTorch's kernels use."""
    scale = (length.to(dtype) / target).unsqueeze(1)  # (Bi, 1)
    idx = torch.arange(target, device=length.device, dtype=dtype).unsqueeze(0)  # (1, n)
    return scale, idx


def _keys_weights(t: Tensor, a: float) -> list[Tensor]:
    """Cubic-convolution weights of the four taps at offsets -1, 0, 1, 2 for fraction ``t``."""
    t1 = t + 1.0
    s = 1.0 - t
    s1 = 2.0 - t
    return [
        ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a,
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0,
        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
        ((a * s1 - 5.0 * a) * s1 + 8.0 * a) * s1 - 4.0 * a,
    ]


def resample_sequence(
    x: Tensor,
    target_length: int,
    mode: InterpolationMode | str = InterpolationMode.linear,
    lengths: Tensor | None = None,
    *,
    cubic_a: float = KEYS_A,
) -> Tensor:
    """Resample ``x`` (B, T, C) to (B, target_length, C) along time.

    ``linear`` and ``nearest`` reproduce ``F.interpolate(..., align_corners=False)`` (``nearest`` is
    PyTorch's legacy nearest and returns only input values). ``cubic`` is Keys cubic convolution with
    border clamping and needs an input of at least 4 samples. With ``lengths`` only the last
    ``lengths[b]`` rows of sample ``b`` are used; a sample of length 0 resamples to zeros, and in
    ``cubic`` mode a sample with 1-3 valid rows (the first windows of a trajectory) is resampled
    linearly.
    """
    mode = InterpolationMode.parse(mode)
    if x.dim() != 3:
        raise ValueError(f"expected x of shape (B, T, C), got {tuple(x.shape)}")
    if int(target_length) < 1:
        raise ValueError(f"target_length must be >= 1, got {target_length}")
    target = int(target_length)
    batch, time, channels = x.shape
    if time == 0:
        raise ValueError(f"expected x of shape (B, T, C) with T >= 1, got {tuple(x.shape)}")

    if lengths is None:
        if mode is InterpolationMode.cubic and time < CUBIC_MIN_SAMPLES:
            raise ValueError(f"cubic interpolation needs at least {CUBIC_MIN_SAMPLES} samples, got T={time}")
        if time == target:
            return x
        length = torch.tensor([time], device=x.device)
        empty = None
    else:
        length = check_lengths(lengths, batch, time).to(x.device)
        short = None
        if mode is InterpolationMode.cubic:
            # Windows at a trajectory's start may hold 1-3 valid rows: cubic convolution is undefined
            # there, so those rows alone are resampled linearly instead of failing mid-epoch.
            short = (length > 0) & (length < CUBIC_MIN_SAMPLES)
            short = short if bool(short.any()) else None
        empty = length == 0
        if not bool(empty.any()):
            empty = None
        length = length.clamp(min=1)

    pos_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    last = (length - 1).unsqueeze(1)  # (Bi, 1) highest valid index, relative to the valid start
    scale, idx = _positions(length, target, pos_dtype)

    if lengths is None:

        def gather(rel: Tensor) -> Tensor:
            return x.index_select(1, rel[0])
    else:
        rows = x.reshape(batch * time, channels)
        start = (torch.arange(batch, device=x.device) * time + (time - length)).unsqueeze(1)

        def gather(rel: Tensor) -> Tensor:
            return rows.index_select(0, (start + rel).reshape(-1)).view(batch, target, channels)

    def weight(w: Tensor) -> Tensor:
        return w.to(x.dtype).unsqueeze(-1)

    if mode is InterpolationMode.nearest:
        src = torch.minimum(torch.floor(scale * idx).long(), last)
        out = gather(src)
    elif mode is InterpolationMode.linear:
        real = (scale * (idx + 0.5) - 0.5).clamp(min=0.0)
        i0 = torch.minimum(torch.floor(real).long(), last)
        lam1 = (real - i0.to(pos_dtype)).clamp(0.0, 1.0)
        i1 = torch.minimum(i0 + 1, last)
        out = gather(i0) * weight(1.0 - lam1)
        out = out.addcmul_(gather(i1), weight(lam1))
    else:
        real = scale * (idx + 0.5) - 0.5
        base = torch.floor(real)
        weights = _keys_weights(real - base, cubic_a)
        base = base.long()
        out = None
        for k, w in zip(range(-1, 3), weights):
            tap = gather((base + k).clamp(min=0).minimum(last))
            out = tap * weight(w) if out is None else out.addcmul_(tap, weight(w))
    if lengths is not None and short is not None:
        linear = resample_sequence(x, target, InterpolationMode.linear, lengths)
        out = torch.where(short.view(batch, 1, 1), linear, out)
    if empty is not None:
        out = out.masked_fill(empty.view(batch, 1, 1), 0.0)
    return out


class _ResampleProject(torch.autograd.Function):
    """``F.linear(resample_sequence(x, ...), weight, bias)`` that keeps only ``x`` for backward.

    The resampled (B, n, C) copy is rebuilt in backward (a few gathers) instead of being kept, and,
    unlike a checkpoint around both, the projection itself is never recomputed.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        lengths: Tensor | None,
        weight: Tensor,
        bias: Tensor | None,
        target: int,
        mode: InterpolationMode,
    ) -> Tensor:
        resampled = resample_sequence(x, target, mode, lengths)
        ctx.save_for_backward(x, lengths, weight)
        ctx.target, ctx.mode, ctx.has_bias = target, mode, bias is not None
        return F.linear(
            resampled, weight.to(resampled.dtype) if torch.is_autocast_enabled() else weight, bias
        )

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, lengths, weight = ctx.saved_tensors
        need_x, _, need_w, need_b = ctx.needs_input_grad[:4]
        with torch.enable_grad():
            source = x.detach().requires_grad_(need_x)
            resampled = resample_sequence(source, ctx.target, ctx.mode, lengths)
        flat_grad = grad.reshape(-1, grad.shape[-1])
        grad_w = grad_b = grad_x = None
        if need_w:
            flat_in = resampled.detach().reshape(-1, resampled.shape[-1]).to(grad.dtype)
            grad_w = (flat_grad.t() @ flat_in).to(weight.dtype)
        if need_b and ctx.has_bias:
            grad_b = flat_grad.sum(0).to(weight.dtype)
        if need_x:
            grad_in = (grad @ weight.to(grad.dtype)).to(resampled.dtype)
            (grad_x,) = torch.autograd.grad(resampled, source, grad_in)
        return grad_x, None, grad_w, grad_b, None, None


def resample_project(
    x: Tensor,
    target_length: int,
    mode: InterpolationMode | str,
    lengths: Tensor | None,
    weight: Tensor,
    bias: Tensor | None = None,
) -> Tensor:
    """Resample ``x`` (B, T, C) to ``target_length`` steps and apply ``F.linear(., weight, bias)``.

    Same values as doing both in turn, but autograd keeps only ``x`` (usually the caller's own
    batch) instead of the resampled copy: the memory-saving path of gradient checkpointing.
    """
    mode = InterpolationMode.parse(mode)
    if not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad):
        return F.linear(resample_sequence(x, target_length, mode, lengths), weight, bias)
    return _ResampleProject.apply(x, lengths, weight, bias, int(target_length), mode)
