"""SensorEncoder: a (B, T, 1026) force + OCT window -> a pooled feature and a few fusion tokens.

Layout, chosen for speed at 1026 channels and for cheap gradient checkpointing:
resample to ``temporal_length`` -> per-step linear projection 1026 -> hidden -> ``num_conv_layers``
residual temporal conv blocks (the first three halve time: 650 -> 325 -> 163 -> 82) -> optional
pre-norm transformer layers over time -> attention pooling with learned queries (query 0: the pooled
feature, queries 1..num_tokens: the tokens) -> linear head to ``output_dim``.

With gradient checkpointing, the resampling + projection runs as one autograd function that keeps
only the caller's raw window (the resampled copy is rebuilt in backward, the projection is never
recomputed); then [norm + first block], each further block and each transformer layer are
checkpoint regions. Only region inputs are kept between forward and backward: a few
(B, hidden, T/2^k) tensors, never a (B, T, 1026) resampled copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vla_sensor.data.windows import SENSOR_CHANNELS
from vla_sensor.models.encoder_config import EncoderConfig, InterpolationMode
from vla_sensor.models.model_config import ModelConfig
from vla_sensor.models.resample import (
    CUBIC_MIN_SAMPLES,
    check_lengths,
    resample_project,
    resample_sequence,
)

NUM_DOWNSAMPLING_BLOCKS = 3


class ConvBlock(nn.Module):
    """Conv1d (k=3, stride 1 or 2) -> GroupNorm -> GELU -> dropout, plus a (subsampled) residual."""

    def __init__(self, channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(1, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, hidden, T) -> (B, hidden, ceil(T / stride))
        h = self.dropout(F.gelu(self.norm(self.conv(x))))
        residual = x[..., :: self.stride] if self.stride > 1 else x
        return residual + h


class SensorEncoder(nn.Module):
    """Encode a variable-length, left-padded sensor window; see the module docstring and docs/encoder.md."""

    def __init__(
        self,
        input_channels: int = SENSOR_CHANNELS,
        temporal_length: int = EncoderConfig.temporal_length,
        hidden_dim: int = ModelConfig.sensor_hidden_dim,
        output_dim: int = ModelConfig.sensor_output_dim,
        num_conv_layers: int = EncoderConfig.num_conv_layers,
        use_transformer: bool = EncoderConfig.use_transformer,
        num_transformer_layers: int = EncoderConfig.num_transformer_layers,
        nhead: int = EncoderConfig.nhead,
        dropout: float = EncoderConfig.dropout,
        gradient_checkpointing: bool = EncoderConfig.gradient_checkpointing,
        interpolation_mode: InterpolationMode | str = EncoderConfig.interpolation_mode,
        *,
        num_tokens: int = ModelConfig.num_sensor_tokens,
        check_finite: bool = EncoderConfig.check_finite,
    ) -> None:
        super().__init__()
        for name, value, low in [
            ("input_channels", input_channels, 1),
            ("temporal_length", temporal_length, 1),
            ("hidden_dim", hidden_dim, 1),
            ("output_dim", output_dim, 1),
            ("num_conv_layers", num_conv_layers, 1),
            ("num_transformer_layers", num_transformer_layers, 0),
            ("nhead", nhead, 1),
            ("num_tokens", num_tokens, 1),
        ]:
            if int(value) < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if use_transformer and num_transformer_layers > 0 and hidden_dim % nhead:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by nhead ({nhead})")
        self.interpolation_mode = InterpolationMode.parse(interpolation_mode)
        self.input_channels = int(input_channels)
        self.temporal_length = int(temporal_length)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.num_tokens = int(num_tokens)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.check_finite = bool(check_finite)

        self.input_proj = nn.Linear(input_channels, hidden_dim)
        self.input_norm = nn.LayerNorm(hidden_dim)
        blocks = []
        length = self.temporal_length
        for i in range(num_conv_layers):
            stride = 2 if i < NUM_DOWNSAMPLING_BLOCKS and length > 1 else 1
            blocks.append(ConvBlock(hidden_dim, stride, dropout))
            length = -(-length // stride)
        self.conv_blocks = nn.ModuleList(blocks)
        self.encoded_length = length

        layers = []
        if use_transformer:
            layers = [
                nn.TransformerEncoderLayer(
                    hidden_dim,
                    nhead,
                    dim_feedforward=4 * hidden_dim,
                    dropout=dropout,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(num_transformer_layers)
            ]
        self.transformer_layers = nn.ModuleList(layers)
        self.pos_embedding = nn.Parameter(torch.zeros(1, length, hidden_dim)) if layers else None
        if self.pos_embedding is not None:
            nn.init.normal_(self.pos_embedding, std=0.02)

        self.pool_norm = nn.LayerNorm(hidden_dim)
        self.pool_queries = nn.Linear(hidden_dim, 1 + num_tokens)  # attention scores per query
        self.head = nn.Linear(hidden_dim, output_dim)
        # Learned output for samples without a sensor: row 0 pooled, rows 1.. tokens.
        self.no_sensor_embedding = nn.Parameter(torch.zeros(1 + num_tokens, output_dim))
        nn.init.normal_(self.no_sensor_embedding, std=0.02)

    # ------------------------------------------------------------------ public API
    def forward(
        self, sensor_data: Tensor, lengths: Tensor | None = None, has_sensor: Tensor | None = None
    ) -> Tensor:
        """(B, T, C) -> (B, output_dim). See :meth:`encode_all` for ``lengths`` / ``has_sensor``."""
        return self.encode_all(sensor_data, lengths, has_sensor)[:, 0]

    def encode_tokens(
        self, sensor_data: Tensor, lengths: Tensor | None = None, has_sensor: Tensor | None = None
    ) -> Tensor:
        """(B, T, C) -> (B, num_tokens, output_dim) for token fusion into the backbone."""
        return self.encode_all(sensor_data, lengths, has_sensor)[:, 1:]

    def encode_all(
        self, sensor_data: Tensor, lengths: Tensor | None = None, has_sensor: Tensor | None = None
    ) -> Tensor:
        """(B, T, C) -> (B, 1 + num_tokens, output_dim): the pooled feature then the tokens.

        ``lengths`` (B,): valid rows per sample, the LAST ``lengths[b]`` rows (left padding).
        ``has_sensor`` (B,) bool: False rows get the learned no-sensor embedding. When omitted and
        ``lengths`` is given, samples of length 0 count as having no sensor.
        """
        lengths, has_sensor = self._validate(sensor_data, lengths, has_sensor)
        if self._checkpointing_active():
            # Keep only the caller's window for the projection's backward (the resampled copy is
            # rebuilt there); the projection output is the first checkpoint's only saved input.
            mode, proj = self.interpolation_mode, self.input_proj
            projected = resample_project(
                sensor_data, self.temporal_length, mode, lengths, proj.weight, proj.bias
            )
        else:
            resampled = resample_sequence(sensor_data, self.temporal_length, self.interpolation_mode, lengths)
            projected = self.input_proj(resampled)
        x = self._run(self._stem_tail, projected)
        for block in self.conv_blocks[1:]:
            x = self._run(block, x)
        x = x.transpose(1, 2)  # (B, T', hidden)
        if self.pos_embedding is not None:
            x = x + self.pos_embedding
        for layer in self.transformer_layers:
            x = self._run(layer, x)
        scores = self.pool_queries(self.pool_norm(x)).softmax(dim=1)  # (B, T', Q)
        pooled = torch.bmm(scores.transpose(1, 2), x)  # (B, Q, hidden)
        out = self.head(pooled)
        mask = has_sensor.view(-1, 1, 1) if has_sensor is not None else torch.ones(1, 1, 1, dtype=torch.bool)
        # Always through torch.where so the no-sensor parameters take part in every step (DDP).
        return torch.where(mask.to(out.device), out, self.no_sensor_embedding.to(out.dtype))

    # ------------------------------------------------------------------ internals
    def _stem_tail(self, projected: Tensor) -> Tensor:
        """(B, T, hidden) projection -> norm -> first conv block (B, hidden, T / 2)."""
        return self.conv_blocks[0](self.input_norm(projected).transpose(1, 2))

    def _checkpointing_active(self) -> bool:
        return self.gradient_checkpointing and self.training and torch.is_grad_enabled()

    def _run(self, fn: Callable[..., Tensor], *args: Any) -> Tensor:
        if self._checkpointing_active():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _validate(
        self, x: Tensor, lengths: Tensor | None, has_sensor: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"sensor_data must have shape (B, T, {self.input_channels}), got {shape}")
        batch, time_steps, channels = x.shape
        if channels != self.input_channels:
            raise ValueError(
                f"sensor_data must have shape (B, T, {self.input_channels}), got {tuple(x.shape)} "
                f"(wrong channel count)"
            )
        if time_steps == 0:
            raise ValueError(f"sensor_data must have T >= 1 time steps, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"sensor_data must be a floating-point tensor, got dtype {x.dtype}")
        if self.check_finite and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            bad = torch.nonzero(~torch.isfinite(x))[0].tolist()
            raise ValueError(
                f"sensor_data contains NaN or inf (first at index {bad}); expected finite values"
            )
        if lengths is not None:
            lengths = check_lengths(lengths, batch, time_steps).to(x.device)
        if has_sensor is not None:
            has_sensor = torch.as_tensor(has_sensor, device=x.device)
            if has_sensor.shape != (batch,) or has_sensor.dtype != torch.bool:
                raise ValueError(
                    f"has_sensor must be a bool tensor of shape ({batch},), got "
                    f"{has_sensor.dtype} {tuple(has_sensor.shape)}"
                )
        elif lengths is not None:
            has_sensor = lengths > 0
        if has_sensor is not None:
            if lengths is None:
                lengths = torch.full((batch,), time_steps, dtype=torch.long, device=x.device)
            if bool((has_sensor & (lengths == 0)).any()):
                raise ValueError("a sample with has_sensor=True needs lengths >= 1")
            # No-sensor samples are not encoded from their (zero) data: empty valid part.
            lengths = torch.where(has_sensor, lengths, torch.zeros_like(lengths))
            if bool(has_sensor.all()) and bool((lengths == time_steps).all()):
                lengths = None  # dense batch: the faster shared-index resampling path
        need = CUBIC_MIN_SAMPLES if self.interpolation_mode is InterpolationMode.cubic else 1
        if lengths is None and time_steps < need:
            raise ValueError(f"cubic interpolation needs at least {need} samples, got T={time_steps}")
        return lengths, has_sensor


def saved_activation_bytes(
    module: nn.Module, *inputs: Tensor, loss_fn: Callable[[Tensor], Tensor] | None = None, **kwargs: Any
) -> dict[str, float]:
    """Run one training step (forward + backward) and measure what autograd keeps for backward.

    Counts each distinct storage saved for backward once, excluding parameters and the given
    inputs (the caller holds those anyway). CPU-friendly stand-in for peak activation memory.
    Returns ``{"saved_bytes", "step_seconds", "step_cpu_seconds"}``; the CPU time of this process
    is the steadier figure on a machine shared with other jobs.
    """
    excluded = {p.untyped_storage().data_ptr() for p in module.parameters()}
    excluded |= {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, Tensor)}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in excluded and ptr not in seen:
            seen[ptr] = storage.nbytes()
        return t

    was_training = module.training
    module.train()
    module.zero_grad(set_to_none=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(*inputs, **kwargs)
    loss = loss_fn(out) if loss_fn is not None else out.float().square().mean()
    loss.backward()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    module.train(was_training)
    return {"saved_bytes": float(sum(seen.values())), "step_seconds": elapsed, "step_cpu_seconds": cpu}
