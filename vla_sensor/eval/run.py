"""Evaluate a trained run: load its config, weights and statistics, score its validation trajectories.

Works on one process and under ``accelerate launch``: the loader gives each rank a disjoint shard
(every sample scored exactly once, whatever the workers and cache), the error sums are added across
ranks, and rank 0 alone prints and writes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vla_sensor.data.writer import write_json_atomic
from vla_sensor.eval.metrics import ActionErrorAccumulator
from vla_sensor.eval.report import format_table, plot_action_traces, plot_error_by_horizon

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
EXPORT_CONFIG_FILE = "vla_config.json"


class RunLoadError(FileNotFoundError):
    """A run directory or checkpoint lacks what evaluation needs."""


@dataclass
class EvalResult:
    """The evaluation's numbers and the files it wrote."""

    metrics: dict[str, Any]
    output_dir: Path
    table: str
    is_main_process: bool = True  # only rank 0 prints and writes


def load_run_config(run_dir: Path) -> DictConfig:
    """The resolved config ``train.py`` wrote into the run directory."""
    if not run_dir.is_dir():
        raise RunLoadError(f"run_dir={run_dir}: no such directory (expected a train.py output directory)")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunLoadError(
            f"run_dir={run_dir}: no config.yaml (the resolved config train.py writes at start-up); "
            "is this a train.py output directory?"
        )
    return OmegaConf.load(path)


def resolve_weights(run_dir: Path, checkpoint: str | None) -> Path:
    """``checkpoint`` if given, else the run's ``final/`` export; a clear error naming what is missing."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_dir():
            raise RunLoadError(f"checkpoint={checkpoint}: no such directory")
        if not (path / WEIGHTS_FILE).is_file():
            raise RunLoadError(f"checkpoint={checkpoint}: no {WEIGHTS_FILE} in it")
        return path
    final = run_dir / "final"
    if not (final / WEIGHTS_FILE).is_file() or not (final / EXPORT_CONFIG_FILE).is_file():
        ckpts = sorted((run_dir / "checkpoints").glob("step_*")) if (run_dir / "checkpoints").is_dir() else []
        hint = f"; pass checkpoint={ckpts[-1]}" if ckpts else ""
        raise RunLoadError(
            f"run_dir={run_dir}: no final export ({final}/{WEIGHTS_FILE} and {EXPORT_CONFIG_FILE}); "
            f"did training finish?{hint}"
        )
    return final


def load_model(cfg: DictConfig, weights: Path, dataset: Any) -> torch.nn.Module:
    """A ``save_pretrained`` export loads as it is; a training checkpoint is rebuilt from the config."""
    from vla_sensor.models.vla import QwenVLAWithSensor

    if (weights / EXPORT_CONFIG_FILE).is_file():
        return QwenVLAWithSensor.from_pretrained(weights)
    from safetensors.torch import load_file

    from vla_sensor.training.components import build_policy

    model = build_policy(cfg, dataset, stats=None)
    missing, unexpected = model.load_state_dict(load_file(weights / WEIGHTS_FILE), strict=False)
    if missing or unexpected:
        raise RunLoadError(
            f"checkpoint {weights}: weights do not match the run's model config "
            f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})"
        )
    return model


def build_eval_dataset(cfg: DictConfig, val_dirs: list[str] | None) -> Any:
    """The run's validation trajectories (same split as training), or the given directories."""
    from vla_sensor.data.build import build_datasets

    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    if val_dirs:
        data_cfg.update(trajectory_dirs=list(val_dirs), val_dirs=[], val_fraction=0.0, generate_if_missing=False)
        dataset, _, _ = build_datasets(data_cfg)
        return dataset
    _, val_ds, _ = build_datasets(data_cfg)
    if val_ds is None:
        raise RunLoadError(
            "the run has no validation trajectories (data.val_fraction=0 and no data.val_dirs); "
            "pass data.val_dirs=[<trajectory dir>, ...]"
        )
    return val_ds


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str | None = None,
    val_dirs: list[str] | None = None,
    output_dir: str | Path | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    num_trace_plots: int = 3,
    cpu: bool = False,
) -> EvalResult:
    """Score a run on held-out trajectories; rank 0 writes ``eval_metrics.json`` and the plots."""
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    weights = resolve_weights(run_dir, checkpoint)
    accelerator = Accelerator(cpu=cpu)
    dataset = build_eval_dataset(cfg, val_dirs)
    model = load_model(cfg, weights, dataset)
    if int(model.action_dim) != dataset.action_dim:
        raise RunLoadError(
            f"the model at {weights} predicts {int(model.action_dim)} action dimensions but the evaluation "
            f"trajectories have {dataset.action_dim}"
        )
    dataset.input_transform = model.build_sample_transform(dataset.view_selection, dataset.image_size)
    acc, traces = score(accelerator, model, dataset, cfg, batch_size, num_workers, num_trace_plots)
    out = Path(output_dir) if output_dir else run_dir / "eval"
    summary = acc.summary()
    if accelerator.is_main_process:
        payload = {
            "run_dir": str(run_dir),
            "weights": str(weights),
            "num_samples": len(dataset),
            "trajectories": [str(t.path) for t in dataset.trajectories],
            "horizon": int(cfg.data.horizon),
            "action_dim": int(model.action_dim),
            "sensor_enabled": bool(getattr(model, "sensor_enabled", True)),
            "processes": accelerator.num_processes,
            "device": str(accelerator.device),
            "metrics": summary,
        }
        write_report(out, payload, traces, num_trace_plots)
    accelerator.wait_for_everyone()
    return EvalResult(metrics=summary, output_dir=out, table=format_table(summary),
                      is_main_process=accelerator.is_main_process)


def score(accelerator: Any, model: torch.nn.Module, dataset: Any, cfg: DictConfig, batch_size: int | None,
          num_workers: int, num_trace_plots: int) -> tuple[ActionErrorAccumulator, dict[int, dict[str, np.ndarray]]]:
    """Every sample once across the ranks: the summed errors, and the first trajectories' traces."""
    from accelerate.utils import gather_object

    from vla_sensor.data.config import data_config
    from vla_sensor.data.loader import build_loader

    data = data_config(cfg.data, batch_size=batch_size or int(cfg.data.batch_size), num_workers=num_workers)
    loader = build_loader(dataset, data, shuffle=False, num_replicas=accelerator.num_processes,
                          rank=accelerator.process_index, pin_memory=accelerator.device.type == "cuda")
    policy = model.to(accelerator.device).eval()
    acc = ActionErrorAccumulator(horizon=int(cfg.data.horizon), action_dim=int(model.action_dim))
    traces: dict[int, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    with torch.no_grad():
        for batch in loader:
            pred = policy.predict_action(batch).float().cpu()
            acc.update(pred, batch["actions"].float(), batch["action_is_pad"], batch["has_sensor_mask"])
            for k in torch.unique(batch["trajectory_index"]).tolist():
                rows = batch["trajectory_index"] == k
                traces[k]["step"].append(batch["step_index"][rows].numpy())
                traces[k]["true"].append(batch["actions"][rows, 0].float().numpy())
                traces[k]["pred"].append(pred[rows, 0].numpy())
    for t in acc.state_tensors():  # each rank scored its own shard: add them up
        t.copy_(accelerator.reduce(t.to(accelerator.device), "sum").cpu())
    chosen = sorted(traces)[:num_trace_plots]  # the first trajectories of each shard
    mine = {k: {name: np.concatenate(traces[k][name]) for name in ("step", "true", "pred")} for k in chosen}
    joined: dict[int, dict[str, np.ndarray]] = {}
    for part in gather_object([mine]) if accelerator.num_processes > 1 else [mine]:
        for k, trace in part.items():
            if k in joined:  # a trajectory split across ranks: join its steps
                joined[k] = {n: np.concatenate([joined[k][n], trace[n]]) for n in trace}
            else:
                joined[k] = trace
    return acc, joined


def write_report(out: Path, payload: dict[str, Any], traces: dict[int, dict[str, np.ndarray]],
                 num_trace_plots: int) -> None:
    """``eval_metrics.json``, ``action_traces.png`` and ``error_by_horizon.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "eval_metrics.json", payload)
    plot_action_traces({k: _by_step(traces[k]) for k in sorted(traces)[:num_trace_plots]},
                       out / "action_traces.png")
    plot_error_by_horizon(payload["metrics"], out / "error_by_horizon.png")


def _by_step(trace: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.argsort(trace["step"], kind="stable")
    return {name: values[order] for name, values in trace.items()}
