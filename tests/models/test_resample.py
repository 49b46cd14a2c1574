"""Numerics of resample_sequence against known signals and PyTorch's own kernels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vla_sensor.models.resample import resample_project, resample_sequence

SIZES = [(325, 650), (1300, 650), (650, 650), (7, 650), (650, 13), (100, 37), (5, 3), (4, 9)]


def _sample(signal, length: int, target: int) -> torch.Tensor:
    """The exact signal at the output positions (align_corners=False, in source-index units)."""
    i = torch.arange(target, dtype=torch.float64)
    return signal((i + 0.5) * length / target - 0.5)


def _as_batch(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(1, -1, 1)


@pytest.mark.parametrize(("length", "target"), SIZES)
def test_linear_matches_f_interpolate(length: int, target: int) -> None:
    x = torch.randn(3, length, 5)
    ref = F.interpolate(x.transpose(1, 2), size=target, mode="linear", align_corners=False).transpose(1, 2)
    torch.testing.assert_close(resample_sequence(x, target, "linear"), ref, atol=1e-6, rtol=1e-6)
    full = torch.full((3,), length)
    torch.testing.assert_close(resample_sequence(x, target, "linear", full), ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("length", "target"), SIZES)
def test_nearest_matches_f_interpolate_and_returns_input_values(length: int, target: int) -> None:
    x = torch.randn(2, length, 4)
    ref = F.interpolate(x.transpose(1, 2), size=target, mode="nearest").transpose(1, 2)
    out = resample_sequence(x, target, "nearest")
    assert torch.equal(out, ref)
    lengths = torch.tensor([length, max(1, length // 2)])
    out = resample_sequence(x, target, "nearest", lengths)
    for b in range(2):
        inputs = set(x[b, -int(lengths[b]) :].flatten().tolist())
        assert set(out[b].flatten().tolist()) <= inputs


@pytest.mark.parametrize(("length", "target"), SIZES)
def test_cubic_kernel_equals_pytorch_bicubic_with_its_coefficient(length: int, target: int) -> None:
    # PyTorch's bicubic (a=-0.75) on a 1-pixel-high image is a 1-D cubic convolution: same taps,
    # same border clamping. Our default is Keys' a=-0.5; with a=-0.75 both must agree.
    x = torch.randn(2, length, 3)
    img = x.transpose(1, 2).reshape(6, 1, 1, length)
    ref = F.interpolate(img, size=(1, target), mode="bicubic", align_corners=False)
    ref = ref.reshape(2, 3, target).transpose(1, 2)
    out = resample_sequence(x, target, "cubic", cubic_a=-0.75)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def _interior(length: int, target: int) -> torch.Tensor:
    """Output steps whose four cubic taps all lie inside the signal (no border clamping)."""
    i = torch.arange(target, dtype=torch.float64)
    real = (i + 0.5) * length / target - 0.5
    return (torch.floor(real) >= 1) & (torch.floor(real) + 2 <= length - 1)


@pytest.mark.parametrize(("length", "target"), [(40, 650), (650, 301), (57, 100)])
def test_cubic_is_exact_on_quadratics_in_the_interior(length: int, target: int) -> None:
    def quad(t: torch.Tensor) -> torch.Tensor:
        return 0.3 * t**2 - 2.0 * t + 5.0

    x = _as_batch(quad(torch.arange(length, dtype=torch.float64)))
    out = resample_sequence(x, target, "cubic").flatten()
    inside = _interior(length, target)
    assert inside.sum() > target // 2
    torch.testing.assert_close(out[inside], _sample(quad, length, target)[inside], atol=1e-9, rtol=1e-9)


def test_cubic_on_a_cubic_polynomial_is_third_order_and_beats_linear() -> None:
    # Keys' kernel reproduces polynomials up to degree 2 exactly; on a cubic its error is O(h^3):
    # halving the sample spacing divides the error by about 8.
    def errors(length: int, mode: str) -> float:
        def cube(t: torch.Tensor) -> torch.Tensor:
            u = t / length
            return u**3 - 0.5 * u**2 + u

        x = _as_batch(cube(torch.arange(length, dtype=torch.float64)))
        out = resample_sequence(x, 650, mode).flatten()
        inside = _interior(length, 650)
        return float((out - _sample(cube, length, 650))[inside].abs().max())

    coarse, fine = errors(20, "cubic"), errors(40, "cubic")
    assert coarse / fine > 6.0
    assert errors(20, "cubic") < errors(20, "linear") / 5


@pytest.mark.parametrize(("length", "target"), [(30, 650), (200, 650), (650, 325)])
def test_cubic_beats_linear_on_a_sine(length: int, target: int) -> None:
    def sine(t: torch.Tensor) -> torch.Tensor:
        return torch.sin(2 * math.pi * 3 * t / length)

    x = _as_batch(sine(torch.arange(length, dtype=torch.float64)))
    truth = _sample(sine, length, target)
    inside = _interior(length, target)
    err = {
        m: float((resample_sequence(x, target, m).flatten() - truth)[inside].abs().max())
        for m in ["linear", "cubic"]
    }
    assert err["cubic"] < err["linear"] / 2


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_padding_never_leaks_and_vectorised_equals_per_sample(mode: str) -> None:
    torch.manual_seed(0)
    batch, time, target = 5, 40, 23
    lengths = torch.tensor([40, 4, 17, 33, 9])
    x = torch.randn(batch, time, 3)
    out = resample_sequence(x, target, mode, lengths)
    # Per-sample loop over the valid part alone.
    for b in range(batch):
        alone = resample_sequence(x[b : b + 1, time - int(lengths[b]) :], target, mode)
        torch.testing.assert_close(out[b : b + 1], alone, atol=1e-6, rtol=1e-6)
    # Different padding content, same output.
    noisy = x.clone()
    for b in range(batch):
        noisy[b, : time - int(lengths[b])] = 1e6 * torch.randn(time - int(lengths[b]), 3)
    assert torch.equal(resample_sequence(noisy, target, mode, lengths), out)


def test_length_zero_resamples_to_zeros() -> None:
    x = torch.randn(2, 10, 3)
    out = resample_sequence(x, 7, "cubic", torch.tensor([0, 10]))
    assert torch.equal(out[0], torch.zeros(7, 3))
    torch.testing.assert_close(out[1:], resample_sequence(x[1:], 7, "cubic"))


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_gradients_flow_to_the_input(mode: str) -> None:
    x = torch.randn(2, 9, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([9, 5])
    assert torch.autograd.gradcheck(lambda t: resample_sequence(t, 13, mode, lengths), (x,))


def test_cubic_needs_four_samples() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        resample_sequence(torch.randn(1, 3, 2), 10, "cubic")
    resample_sequence(torch.randn(1, 3, 2), 10, "linear")  # the other modes accept short inputs


def test_cubic_resamples_short_windows_of_a_batch_linearly() -> None:
    # the first windows of a trajectory hold fewer than 4 rows: they fall back to linear, the rest stay cubic
    x = torch.randn(3, 10, 2)
    lengths = torch.tensor([10, 3, 1])
    out = resample_sequence(x, 12, "cubic", lengths)
    torch.testing.assert_close(out[0], resample_sequence(x[:1], 12, "cubic")[0])
    torch.testing.assert_close(out[1], resample_sequence(x[1:2, -3:], 12, "linear")[0])
    torch.testing.assert_close(out[2], x[2, -1].expand(12, 2))


def test_bad_arguments() -> None:
    x = torch.randn(2, 10, 3)
    with pytest.raises(ValueError, match=r"linear, nearest, cubic"):
        resample_sequence(x, 5, "bicubic")
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        resample_sequence(torch.randn(10, 3), 5)
    with pytest.raises(ValueError, match="T >= 1"):
        resample_sequence(torch.randn(2, 0, 3), 5)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        resample_sequence(x, 5, "linear", torch.tensor([3]))
    with pytest.raises(ValueError, match=r"\[0, T=10\]"):
        resample_sequence(x, 5, "linear", torch.tensor([3, 11]))
    with pytest.raises(ValueError, match="integer"):
        resample_sequence(x, 5, "linear", torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_resample_project_equals_resample_then_linear(mode: str) -> None:
    # Same values and gradients as the plain composition, while keeping only x for backward.
    torch.manual_seed(0)
    x = torch.randn(3, 11, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([11, 6, 4])
    out = resample_project(x, 17, mode, lengths, weight, bias)
    ref = F.linear(resample_sequence(x, 17, mode, lengths), weight, bias)
    torch.testing.assert_close(out, ref)
    assert torch.autograd.gradcheck(
        lambda a, w, b: resample_project(a, 17, mode, lengths, w, b), (x, weight, bias)
    )
    saved: list[tuple[int, ...]] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        resample_project(x.detach(), 17, mode, lengths, weight, bias)
    assert (3, 17, 4) not in saved  # the resampled copy is not kept
