"""A tiny regression task with the loop's contract, to check the training machinery in seconds.

``python train.py trainer.components=vla_sensor.training.toy.build_toy_components`` trains it with
the full machinery (DDP, checkpoints, resume, trackers) but no VLA model or recordings: useful to check
a cluster setup. With ``VLA_TOY_TRACE_DIR`` set, every process records the sample indices it trained
on and its final parameters there (the DDP tests compare them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from vla_sensor.training.components import Components


class ToyDataset(Dataset):
    """``y = tanh(W x)`` with fixed random ``W`` and inputs; deterministic per index."""

    def __init__(self, n: int, dim: int = 16, seed: int = 0, offset: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(dim, dim, generator=g) / dim**0.5
        self.x = torch.randn(n + offset, dim, generator=g)[offset:]
        self.y = torch.tanh(self.x @ self.w)
        self.offset = offset
        self.cache_nbytes = self.x.numel() * 4

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(i + self.offset)}


class ToyModel(nn.Module):
    """An MLP with dropout (so resume must restore the RNG to reproduce a run)."""

    def __init__(self, dim: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, dim))
        self.trace: list[int] = []

    def forward(self, batch: dict) -> dict:
        if self.training:
            self.trace += batch["index"].tolist()
        pred = self.net(batch["x"])
        return {"loss": nn.functional.mse_loss(pred, batch["y"]), "pred": pred}


def _export(model: nn.Module, out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))


def _trace(model: nn.Module, accelerator) -> None:
    trace_dir = os.environ.get("VLA_TOY_TRACE_DIR")
    if not trace_dir:
        return
    rank = accelerator.process_index
    Path(trace_dir).mkdir(parents=True, exist_ok=True)
    (Path(trace_dir) / f"rank{rank}_indices.json").write_text(json.dumps(model.trace))
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, Path(trace_dir) / f"rank{rank}_params.pt")


def build_toy_components(cfg, accelerator) -> Components:
    n = int(os.environ.get("VLA_TOY_SAMPLES", "256"))
    return Components(
        model=ToyModel(),
        train_dataset=ToyDataset(n, seed=cfg.seed),
        val_dataset=ToyDataset(64, seed=cfg.seed, offset=n),
        export=_export,
        export_files={"normalization.json": {"note": "toy task, no normalisation"}},
        on_end=_trace,
    )
