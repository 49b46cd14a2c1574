"""Sensor-encoder training step: time and activation memory, with and without checkpointing.

Activation memory on CPU is the bytes autograd keeps for backward (unique storages, parameters left
out); on a GPU it is the allocator's peak during forward + backward above the memory held before.
Plain and checkpointed steps use the same module (the flag is an attribute) and alternate within
each repeat so that drifting machine load hits both alike.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vla_sensor.bench.config import EncoderBenchConfig
from vla_sensor.bench.memory import count_saved_tensors, cuda_peak_bytes, parameter_storage_filter
from vla_sensor.bench.timing import Timing, measure

log = logging.getLogger(__name__)


def build_encoder(cfg: EncoderBenchConfig, device: torch.device, mode: str = "linear") -> nn.Module:
    from vla_sensor.models.sensor_encoder import SensorEncoder

    encoder = SensorEncoder(
        input_channels=cfg.channels,
        temporal_length=cfg.temporal_length,
        hidden_dim=cfg.hidden_dim,
        output_dim=cfg.output_dim,
        num_conv_layers=cfg.num_conv_layers,
        num_transformer_layers=cfg.num_transformer_layers,
        gradient_checkpointing=False,
        interpolation_mode=mode,
    )
    return encoder.to(device).train()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(
    encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, device: torch.device
) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = encoder(x).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        _sync(device)

    return step


def saved_bytes(encoder: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(bytes, tensors) saved for backward by one forward.

    Parameters and the input window are left out: the optimizer and the batch hold them anyway.
    """
    with count_saved_tensors(exclude=parameter_storage_filter(encoder, extra=(x,))) as acc:
        out = encoder(x)
    out.float().pow(2).mean().backward()
    encoder.zero_grad(set_to_none=True)
    return acc.nbytes, acc.count


def gpu_peak_bytes(encoder: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    def fwd_bwd() -> None:
        encoder(x).float().pow(2).mean().backward()

    peak = cuda_peak_bytes(fwd_bwd, device)
    encoder.zero_grad(set_to_none=True)
    return peak


def bench_training_steps(cfg: EncoderBenchConfig, device: torch.device) -> dict[str, Any]:
    """For each T: step time and activation memory, plain vs checkpointed."""
    torch.manual_seed(0)
    encoder = build_encoder(cfg, device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-4)
    n_params = sum(p.numel() for p in encoder.parameters())
    results: dict[str, Any] = {
        "batch_size": cfg.batch_size,
        "channels": cfg.channels,
        "hidden_dim": cfg.hidden_dim,
        "output_dim": cfg.output_dim,
        "parameters": n_params,
        "memory_metric": "cuda_peak_allocated" if device.type == "cuda" else "saved_for_backward",
        "lengths": {},
    }
    for length in cfg.lengths:
        x = torch.randn(cfg.batch_size, length, cfg.channels, device=device)
        step = _train_step(encoder, optimizer, x, device)
        samples: dict[bool, list[float]] = {False: [], True: []}
        memory: dict[bool, dict[str, int]] = {}
        for flag in (False, True):
            encoder.gradient_checkpointing = flag
            if device.type == "cuda":
                memory[flag] = {"bytes": gpu_peak_bytes(encoder, x, device)}
            else:
                nbytes, count = saved_bytes(encoder, x)
                memory[flag] = {"bytes": nbytes, "tensors": count}
            for _ in range(cfg.warmup):
                step()
        for _ in range(cfg.repeats):
            for flag in (False, True):
                encoder.gradient_checkpointing = flag
                samples[flag].extend(measure(step, repeats=1, warmup=0).samples)
        encoder.gradient_checkpointing = False
        plain, ckpt = Timing.from_samples(samples[False]), Timing.from_samples(samples[True])
        results["lengths"][str(length)] = {
            "plain": {"step": plain.to_dict(), **memory[False]},
            "checkpointed": {"step": ckpt.to_dict(), **memory[True]},
            "memory_ratio": memory[True]["bytes"] / max(memory[False]["bytes"], 1),
            # paired: each checkpointed step over the plain step run just before it, so that a
            # change in machine load between repeats cancels out; then the median of those ratios
            "time_ratio": statistics.median(c / p for p, c in zip(samples[False], samples[True])),
            "time_ratio_of_medians": ckpt.median / plain.median,
        }
        log.info(
            "encoder T=%d: step %.3f s -> %.3f s, activations %.1f MB -> %.1f MB",
            length, plain.median, ckpt.median, memory[False]["bytes"] / 1e6, memory[True]["bytes"] / 1e6,
        )
        del x
    return results


def conv_stack_fn(encoder: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The part of the encoder that every interpolation mode feeds: projection + conv blocks.

    Falls back to the whole encoder forward when the encoder does not expose those parts.
    """
    proj = getattr(encoder, "input_proj", None)
    norm = getattr(encoder, "input_norm", None)
    blocks = getattr(encoder, "conv_blocks", None)
    if isinstance(proj, nn.Module) and isinstance(norm, nn.Module) and isinstance(blocks, nn.ModuleList):

        def run_stack(x: torch.Tensor) -> torch.Tensor:
            h = norm(proj(x)).transpose(1, 2)
            for block in blocks:
                h = block(h)
            return h

        return run_stack, f"input projection + {len(blocks)} conv blocks"
    return encoder, "whole encoder forward"


def bench_interpolation(cfg: EncoderBenchConfig, device: torch.device) -> dict[str, Any]:
    """Each mode's cost resampling (B, resample_length, C) to temporal_length vs the conv stack."""
    from vla_sensor.models.resample import resample_sequence

    torch.manual_seed(0)
    x = torch.randn(cfg.batch_size, cfg.resample_length, cfg.channels, device=device)
    results: dict[str, Any] = {
        "input_shape": list(x.shape),
        "target_length": cfg.temporal_length,
        "modes": {},
    }
    with torch.no_grad():
        for mode in cfg.interpolation_modes:

            def resample(mode: str = mode) -> None:
                resample_sequence(x, cfg.temporal_length, mode)
                _sync(device)

            results["modes"][mode] = measure(resample, repeats=cfg.resample_repeats, warmup=1).to_dict()
        encoder = build_encoder(cfg, device).eval()
        resampled = resample_sequence(x, cfg.temporal_length, "linear")
        stack, label = conv_stack_fn(encoder)

        def run_stack() -> None:
            stack(resampled)
            _sync(device)

        results["conv_stack"] = measure(run_stack, repeats=cfg.resample_repeats, warmup=1).to_dict()
        results["conv_stack_label"] = label
    return results


def run(cfg: EncoderBenchConfig, device: torch.device) -> dict[str, Any]:
    threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    try:
        return {
            "device": device.type,
            "torch_threads": torch.get_num_threads(),
            "training": bench_training_steps(cfg, device),
            "interpolation": bench_interpolation(cfg, device),
        }
    finally:
        torch.set_num_threads(threads)
