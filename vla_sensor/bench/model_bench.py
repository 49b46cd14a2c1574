"""Training step of the fused model: samples/s and peak memory.

Tiny config (random weights, fp32) on CPU, on real samples of the generated recordings passed
through the model's own sample transform and the batch collate. Where CUDA is available, the
3B-size config with random weights in bf16 as well. Stage 1 (frozen backbone) and stage 2 (LoRA)
are both timed. Rows that cannot run say why instead of carrying a number.

CPU "peak memory" is the growth of the process's resident set during the step, sampled every
millisecond from /proc (there is no CPU allocator peak to read), next to the bytes autograd saved
for backward; on a GPU it is the allocator's peak.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import torch

from vla_sensor.bench.config import ModelBenchConfig
from vla_sensor.bench.memory import count_saved_tensors, parameter_storage_filter
from vla_sensor.bench.timing import measure

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
ACTION_DIM = 7


class RssPeak:
    """Peak resident set size growth while the block runs (a 1 ms sampling thread)."""

    def __init__(self, interval: float = 1e-3) -> None:
        self.interval = interval
        self.base = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> RssPeak:
        self.base = self.peak = self.rss()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _model_cfg(name: str, dtype: str | None = None) -> Any:
    from omegaconf import OmegaConf

    from vla_sensor.models.model_config import ModelConfig

    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))
    cfg.backbone.random_init = True
    if dtype is not None:
        cfg.backbone.torch_dtype = dtype
    return cfg


def _build(model_cfg: Any, views: list[str], image_size: int) -> Any:
    from vla_sensor.models.vla import build_model

    return build_model(model_cfg, action_dim=ACTION_DIM, horizon=8, view_selection=views,
                       image_size=(image_size, image_size))


def _batch(model: Any, recordings: list[Path], views: list[str], image_size: int, batch_size: int) -> dict[str, Any]:
    """One batch of the recordings through the product's dataset and loader, pre-processed for ``model``."""
    from vla_sensor.data.dataset import InsertionDataset
    from vla_sensor.data.loader import build_loader

    ds = InsertionDataset([str(p) for p in recordings], horizon=8, view_selection=views, cache_strategy="stream",
                          image_size=(image_size, image_size), progress=False, num_workers=0)
    ds.input_transform = model.build_sample_transform(views, (image_size, image_size))
    step = max(len(ds) // batch_size, 1)
    loader = build_loader(ds, ds.config, shuffle=False, batches=[[(i * step) % len(ds) for i in range(batch_size)]])
    return next(iter(loader))


def _step_row(model: Any, batch: dict[str, Any], stage: int, stage_kw: dict[str, Any], cfg: ModelBenchConfig,
              device: torch.device, label: str, batch_size: int) -> dict[str, Any]:
    counts = model.configure_stage(stage, **(stage_kw if stage == 2 else {}))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(batch)["loss"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # first step: optimizer state and lazy buffers exist from here on
    row: dict[str, Any] = {"config": label, "device": device.type, "batch_size": batch_size, "stage": stage,
                           "trainable_parameters": int(counts.get("trainable", 0)),
                           "total_parameters": int(counts.get("total", 0))}
    with count_saved_tensors(exclude=parameter_storage_filter(model)) as saved:
        loss = model(batch)["loss"]
    loss.backward()
    optimizer.zero_grad(set_to_none=True)
    row["saved_for_backward_bytes"] = saved.nbytes
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        row["peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
        row["peak_metric"] = "cuda max_memory_allocated (weights, optimizer state, activations)"
    else:
        with RssPeak() as peak:
            step()
        row["peak_bytes"] = peak.growth
        row["peak_metric"] = "resident set growth during one step (after the first step)"
    timing = measure(step, repeats=cfg.repeats, warmup=cfg.warmup)
    row["step"] = timing.to_dict()
    row["samples_per_s"] = batch_size / timing.median
    row["status"] = "measured"
    return row


def _run_config(name: str, label: str, device: torch.device, dtype: str | None, batch_size: int,
                cfg: ModelBenchConfig, recordings: list[Path], views: list[str], image_size: int) -> list[dict[str, Any]]:
    from vla_sensor.models.vla import stage_kwargs

    model_cfg = _model_cfg(name, dtype)
    model = _build(model_cfg, views, image_size).to(device)
    batch = _batch(model, recordings, views, image_size, batch_size)
    rows = []
    for stage in (1, 2):
        rows.append(_step_row(model, batch, stage, stage_kwargs(model_cfg), cfg, device, f"{label}, stage {stage}", batch_size))
        log.info("model %s stage %d: %.2f samples/s", label, stage, rows[-1]["samples_per_s"])
    return rows


def run(cfg: ModelBenchConfig, recordings: list[Path], views: list[str], image_size: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    tiny = "tiny (random weights, fp32)"
    gpu = f"{cfg.gpu_config} (random weights, bf16)"
    try:
        rows += _run_config("tiny", tiny, torch.device("cpu"), None, cfg.batch_size, cfg, recordings, views, image_size)
    except Exception as exc:  # report, never hide: the row says what failed
        log.exception("tiny model step failed")
        rows.append({"config": tiny, "device": "cpu", "status": f"failed: {type(exc).__name__}: {exc}"})
    if not torch.cuda.is_available():
        rows += [{"config": f"{gpu}, stage {s}", "device": "cuda", "status": "skipped: no CUDA device on this machine"} for s in (1, 2)]
    else:
        try:
            rows += _run_config(cfg.gpu_config, gpu, torch.device("cuda"), "bfloat16", cfg.gpu_batch_size, cfg,
                                recordings, views, image_size)
        except Exception as exc:
            log.exception("GPU model step failed")
            rows.append({"config": gpu, "device": "cuda", "status": f"failed: {type(exc).__name__}: {exc}"})
    return {"rows": rows}
