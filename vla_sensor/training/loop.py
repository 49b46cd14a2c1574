"""The training loop: Accelerate (DDP / FSDP / mixed precision), AdamW, warmup + cosine, checkpoints.

Read top to bottom: ``train`` sets up the process group and tears it down whatever happens;
``_train`` names the steps: resolve the run, build, restore, ``fit`` (one ``train_step`` per optimizer
step), ``finish``. One optimizer step consumes
``grad_accum_steps`` micro-batches; every count (schedule, logging, checkpoints, ``max_steps``) is in
optimizer steps.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, send_to_device, set_seed
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vla_sensor.data.collate import collate_samples
from vla_sensor.data.loader import BatchLoader, build_loader, make_batch_sampler
from vla_sensor.training.checkpointing import (
    ResumeError,
    TrainState,
    agree_on_checkpoint,
    load_checkpoint,
    resolve_resume,
    run_dir_of,
    save_checkpoint,
)
from vla_sensor.training.components import Components, cache_nbytes
from vla_sensor.training.config import choice
from vla_sensor.training.ema import EMA
from vla_sensor.training.feature_cache import check_config as check_feature_cache
from vla_sensor.training.metrics import IntervalMeter, JsonlTracker, gpu_memory, host_rss_bytes
from vla_sensor.training.preemption import StopRequest
from vla_sensor.training.run_dir import (
    decide_run_dir,
    incompatible_keys,
    job_name,
    release_run_dirs,
    sweep_group,
)
from vla_sensor.training.sampler import EndlessBatches

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Train as configured and return the last logged metrics (with ``run_dir``).

    Process-global state (process group, Accelerate's singletons, trackers) is always released, so
    the jobs of a multirun sweep in one process do not leak into each other. A stop signal ends the
    run after a step with a checkpoint; under submitit the job is then handed back to be requeued
    (:mod:`vla_sensor.training.preemption`).
    """
    accelerator = None
    stop = StopRequest()
    try:
        accelerator = make_accelerator(cfg)
        result = _train(cfg, accelerator, stop)
    finally:
        teardown(accelerator)
        stop.restore()
    stop.hand_back()
    return result


def make_accelerator(cfg: DictConfig) -> Accelerator:
    """An Accelerator for this launch; fails early if it did not join the world that was launched."""
    log_with: list = []
    if cfg.logger.jsonl:
        log_with.append(JsonlTracker())
    if cfg.logger.wandb.enabled:
        log_with.append("wandb")
    accelerator = Accelerator(
        cpu=cfg.cpu,
        mixed_precision=choice(cfg.trainer.mixed_precision),
        log_with=log_with or None,
        step_scheduler_with_optimizer=False,  # we step the schedule once per optimizer step ourselves
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.trainer.find_unused_parameters)],
    )
    check_world_size(accelerator.num_processes, cfg.trainer.expected_world_size)
    return accelerator


def check_world_size(actual: int, expected: int | None) -> None:
    """The launcher's ``WORLD_SIZE`` and ``trainer.expected_world_size`` must match what Accelerate joined."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != actual:
        raise RuntimeError(
            f"the launcher started {launched} processes (WORLD_SIZE) but Accelerate joined a world of {actual}. "
            "On CPU pass cpu=true (Accelerate >= 1.13 needs Accelerator(cpu=True) for gloo DDP); on GPU check "
            "that each process sees a device."
        )
    if expected is not None and expected != actual:
        raise RuntimeError(
            f"trainer.expected_world_size={expected} but this launch has {actual} process(es); "
            f"launch e.g. `accelerate launch --num_processes {expected} train.py ...`"
        )


def teardown(accelerator: Accelerator | None) -> None:
    """Finish trackers, release the run directory, destroy the process group, reset Accelerate's state."""
    from accelerate.state import AcceleratorState, GradientState

    if accelerator is not None:
        with contextlib.suppress(Exception):
            accelerator.end_training()
    release_run_dirs()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def validate_config(cfg: DictConfig) -> None:
    """Cross-field checks the schema cannot express; run before anything is built."""
    tc = cfg.trainer
    stage = choice(tc.stage.name)
    if stage != "stage1":
        if not tc.stage.init_from:
            raise ValueError(f"trainer.stage={stage} needs trainer.stage.init_from=<a stage-1 run or its final/>")
        if not Path(tc.stage.init_from).is_dir():
            raise FileNotFoundError(f"trainer.stage.init_from={tc.stage.init_from}: no such directory")
    for key in ("grad_accum_steps", "log_every", "max_steps", "epochs"):
        if tc[key] is not None and tc[key] < 1:
            raise ValueError(f"trainer.{key} must be >= 1, got {tc[key]}")
    for key in ("warmup_steps", "val_every", "save_every"):
        if tc[key] < 0:
            raise ValueError(f"trainer.{key} must be >= 0, got {tc[key]}")
    if not tc.lr > 0:
        raise ValueError(f"trainer.lr must be > 0, got {tc.lr}")
    if cfg.data.batch_size < 1:
        raise ValueError(f"data.batch_size must be >= 1, got {cfg.data.batch_size}")
    if cfg.data.num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {cfg.data.num_workers}")
    if tc.max_steps is None and tc.epochs is None:
        raise ValueError("set trainer.max_steps or trainer.epochs")
    check_feature_cache(cfg)


@dataclass
class Run:
    """Where a run lives and the checkpoint it resumes from (None: a fresh start)."""

    run_dir: Path
    checkpoint: Path | None


@dataclass
class Training:
    """Everything the optimizer steps need, built once."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    train_batches: EndlessBatches
    max_steps: int
    val_loader: BatchLoader | None


def _train(cfg: DictConfig, accelerator: Accelerator, stop: StopRequest) -> dict:
    validate_config(cfg)
    run = resolve_run(cfg, accelerator)
    set_seed(cfg.seed)
    components: Components = get_method(cfg.trainer.components)(cfg, accelerator)
    training = build_training(cfg, accelerator, components)
    state = restore(accelerator, run.checkpoint, cfg.seed)
    start_trackers(cfg, accelerator, run.run_dir, state, resumed=run.checkpoint is not None)
    last_log = fit(cfg, accelerator, components, training, state, run.run_dir, stop)
    finish(cfg, accelerator, components, training, state, run.run_dir)
    return {**last_log, "step": state.step, "run_dir": str(run.run_dir)}


def resolve_run(cfg: DictConfig, accelerator: Accelerator) -> Run:
    """The run directory (rank 0 decides) and the checkpoint to resume, refusing an incompatible one."""
    tc = cfg.trainer
    output_dir = cfg.output_dir
    resume = None if str(tc.resume).lower() in ("", "none", "null", "false") else tc.resume
    if resume not in (None, "auto") and not output_dir:  # continue the run that owns the checkpoint
        output_dir = str(run_dir_of(resolve_resume(resume, Path("."), verify=False)))
    run_dir = decide_run_dir(output_dir, accelerator)
    checkpoint = agree_on_checkpoint(resume, run_dir, accelerator)  # rank 0 verifies the files
    main = accelerator.is_main_process
    # A sweep job's directory (<sweep dir>/<job number>) is the same when the job is requeued.
    if resume == "auto" and checkpoint is None and not cfg.output_dir and main and sweep_group() is None:
        log.warning("trainer.resume=auto without output_dir: a new run directory has nothing to resume")
    if checkpoint is not None:
        saved_cfg = run_dir_of(checkpoint) / "config.yaml"
        diff = incompatible_keys(OmegaConf.load(saved_cfg), cfg) if saved_cfg.is_file() else []
        if diff:
            raise ResumeError(
                f"checkpoint {checkpoint} was trained with an incompatible config:\n  " + "\n  ".join(diff)
                + "\nUse another output_dir for a new run."
            )
    if main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info("run directory: %s (%d process(es), device %s)", run_dir, accelerator.num_processes,
                 accelerator.device)
    return Run(run_dir, checkpoint)


def build_training(cfg: DictConfig, accelerator: Accelerator, components: Components) -> Training:
    """Batch order, validation loader, optimizer, schedule and EMA, prepared by Accelerate."""
    tc = cfg.trainer
    world, rank = accelerator.num_processes, accelerator.process_index
    train_batches = EndlessBatches(make_batch_sampler(components.train_dataset, cfg.data, shuffle=True,
                                                      drop_last=True, num_replicas=world, rank=rank))
    batches_per_epoch = train_batches.epoch_length(0)
    if batches_per_epoch == 0:
        raise ValueError(
            f"the training split ({len(components.train_dataset)} samples) is smaller than one batch per "
            f"process: data.batch_size={cfg.data.batch_size} x {world} process(es)"
        )
    max_steps = total_steps(tc, batches_per_epoch)
    val_loader = None
    if components.val_dataset is not None and len(components.val_dataset) > 0:
        val_loader = build_loader(components.val_dataset, cfg.data, shuffle=False, num_replicas=world, rank=rank,
                                  pin_memory=accelerator.device.type == "cuda",
                                  collate_fn=components.collate_fn or collate_samples)
    optimizer = make_optimizer(components.model, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc.warmup_steps, max_steps, tc.min_lr_ratio))
    model, optimizer, scheduler = accelerator.prepare(components.model, optimizer, scheduler)
    ema = None
    if tc.ema.enabled:
        ema = EMA(accelerator.unwrap_model(model), tc.ema.decay)
        accelerator.register_for_checkpointing(ema)
    return Training(model, optimizer, scheduler, ema, train_batches, max_steps, val_loader)


def restore(accelerator: Accelerator, checkpoint: Path | None, seed: int) -> TrainState:
    """The saved state of ``checkpoint`` (model, optimizer, RNG, data position), or a fresh one."""
    if checkpoint is None:
        set_seed(seed + accelerator.process_index)  # distinct dropout per process
        return TrainState()
    state = load_checkpoint(accelerator, checkpoint)
    if accelerator.is_main_process:
        log.info("resumed from %s at step %d (epoch %d, batch %d)", checkpoint, state.step, state.epoch,
                 state.batch_in_epoch)
    return state


def train_step(accelerator: Accelerator, training: Training, micro_batches: Iterator[dict], accum: int,
               grad_clip: float) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """One optimizer step over ``accum`` micro-batches: (loss, grad norm, data-wait seconds, samples)."""
    model = training.model
    loss_sum = torch.zeros((), device=accelerator.device)
    data_wait, samples = 0.0, 0
    for micro in range(accum):
        t0 = time.perf_counter()
        batch = send_to_device(next(micro_batches), accelerator.device, non_blocking=True)
        data_wait += time.perf_counter() - t0
        samples += _batch_len(batch) * accelerator.num_processes  # ranks take equal turns
        sync = micro == accum - 1  # gradients are all-reduced on the last micro-batch only
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            loss = model(batch)["loss"]
            accelerator.backward(loss / accum)
        loss_sum += loss.detach() / accum
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    training.optimizer.step()
    training.scheduler.step()
    training.optimizer.zero_grad(set_to_none=True)
    if training.ema is not None:
        training.ema.update(accelerator.unwrap_model(model))
    return loss_sum, grad_norm, data_wait, samples


def fit(cfg: DictConfig, accelerator: Accelerator, components: Components, training: Training, state: TrainState,
        run_dir: Path, stop: StopRequest) -> dict:
    """Optimizer steps until ``max_steps`` (or ``stop_at_step``, or a stop signal); logs, validates, saves."""
    tc = cfg.trainer
    micro_batches = _micro_batches(cfg, components, training.train_batches, state, accelerator)
    meter = IntervalMeter()
    last_log: dict = {}
    bar = tqdm(total=training.max_steps, initial=state.step, desc="train", dynamic_ncols=True,
               disable=not (accelerator.is_main_process and tc.progress_bar))
    training.model.train()
    end_step = training.max_steps if tc.stop_at_step is None else min(training.max_steps, tc.stop_at_step)
    try:
        while state.step < end_step:
            t_start = time.perf_counter()  # step time: data wait + compute; validation and saving excluded
            position = state.epoch, state.batch_in_epoch
            try:
                loss, grad_norm, data_wait, samples = train_step(accelerator, training, micro_batches,
                                                                 tc.grad_accum_steps, tc.grad_clip)
            except BatchLoadingError as exc:
                if not stop.requested or accelerator.num_processes > 1:
                    raise
                # A worker that ended after the stop request (killed with the job) is part of the stop: the
                # unfinished step is dropped and redone on resume.
                state.epoch, state.batch_in_epoch = position
                training.optimizer.zero_grad(set_to_none=True)
                stop.stopped_at = state.step
                log.warning("stop requested (%s); a DataLoader worker ended meanwhile (%s): checkpointing step %d "
                            "and exiting", signal.Signals(stop.signum).name, exc.__cause__, state.step)
                if tc.save_every > 0:
                    save_checkpoint(accelerator, run_dir, state, tc.keep_last)
                break
            state.step += 1
            state.samples_seen += samples
            meter.add(time.perf_counter() - t_start, data_wait, samples, loss)
            bar.update(1)
            last = state.step == end_step
            if not last and stop.agreed(accelerator):  # every step, all ranks: the same stop step everywhere
                last = True  # preemption: checkpoint now and leave; the same command with resume=auto continues
                stop.stopped_at = state.step
                log.warning("stop requested (%s) at step %d: checkpointing and exiting",
                            signal.Signals(stop.signum).name, state.step)
            values = {}
            if training.val_loader is not None and (last or (tc.val_every > 0 and state.step % tc.val_every == 0)):
                values["val_loss"] = validate(accelerator, training.model, training.val_loader, tc.val_batches)
            if last or state.step % tc.log_every == 0:
                values.update(train_metrics(accelerator, meter, training.scheduler, grad_norm, state, components))
                bar.set_postfix(loss=f"{values['loss']:.4f}")
            if values:
                accelerator.log(values, step=state.step)  # one record per step: no duplicate steps in metrics.jsonl
                last_log = {**last_log, **values}
            if tc.save_every > 0 and (last or state.step % tc.save_every == 0):
                save_checkpoint(accelerator, run_dir, state, tc.keep_last)
            if last:
                break
    finally:
        micro_batches.close()
    bar.close()
    return last_log


def finish(cfg: DictConfig, accelerator: Accelerator, components: Components, training: Training,
           state: TrainState, run_dir: Path) -> None:
    """EMA weights into the model, the final export (rank 0, when training completed), end hooks."""
    tc = cfg.trainer
    unwrapped = accelerator.unwrap_model(training.model)
    if training.ema is not None:
        training.ema.copy_to(unwrapped)
    accelerator.wait_for_everyone()
    done = accelerator.is_main_process and tc.export and state.step >= training.max_steps
    if done and accelerator.distributed_type == DistributedType.FSDP:
        # Parameters are sharded: the export would need a gathered copy of a 7B model on rank 0.
        log.warning("FSDP: no final/ export; merge the last checkpoint with `accelerate merge-weights "
                    "%s/checkpoints/<step>/pytorch_model_fsdp_0 <out>`", run_dir)
    elif done:
        export(unwrapped, components, cfg, run_dir / "final")
    if components.on_end is not None:
        components.on_end(unwrapped, accelerator)
    accelerator.wait_for_everyone()


# --- pieces of the loop ------------------------------------------------------------------------------


def total_steps(tc: DictConfig, batches_per_epoch: int) -> int:
    """``trainer.max_steps``, or ``trainer.epochs`` full passes, in optimizer steps."""
    if tc.max_steps is not None:
        return int(tc.max_steps)
    if tc.epochs is not None:
        return max(1, int(tc.epochs) * batches_per_epoch // tc.grad_accum_steps)
    raise ValueError("set trainer.max_steps or trainer.epochs")


def lr_lambda(warmup: int, max_steps: int, min_ratio: float):
    """Linear warmup to the peak, then cosine down to ``min_ratio`` of it at ``max_steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: torch.nn.Module, tc: DictConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norms (tensors below 2-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (check trainer/stage)")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": tc.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.betas))


class BatchLoadingError(RuntimeError):
    """A training batch could not be loaded: a DataLoader worker raised or died."""


class _MicroBatches:
    """Batches without end from the data position recorded in ``state``, which it keeps up to date.

    A worker that raises or dies stops the run with the sample indices (and trajectories) of the batch
    it was loading; :meth:`close` stops the workers at once.
    """

    def __init__(self, loader: BatchLoader, sent: _SentBatches, state: TrainState, batches: EndlessBatches,
                 dataset) -> None:
        self._it = iter(loader)
        self._sent, self._state, self._batches, self._dataset = sent, state, batches, dataset
        self._epoch_length = batches.epoch_length(state.epoch)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        state = self._state
        try:
            batch = next(self._it)
        except StopIteration:
            raise
        except Exception as exc:  # a worker raised or died: say which samples, then stop (no retry, no hang)
            indices = self._sent.pending[0] if self._sent.pending else []
            self.close()
            raise BatchLoadingError(
                f"loading training batch {state.batch_in_epoch + 1} of epoch {state.epoch} failed "
                f"(sample indices {indices}{_sources(self._dataset, indices)}): {type(exc).__name__}: {exc}"
            ) from exc
        self._sent.pending.popleft()
        if state.batch_in_epoch >= self._epoch_length:  # a resume exactly at an epoch's end
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            self._epoch_length = self._batches.epoch_length(state.epoch)
        state.batch_in_epoch += 1
        return batch

    def close(self) -> None:
        self._it.close()


def _micro_batches(cfg: DictConfig, components: Components, batches: EndlessBatches, state: TrainState,
                   accelerator: Accelerator) -> _MicroBatches:
    batches.epoch, batches.skip = state.epoch, state.batch_in_epoch
    sent = _SentBatches(batches)
    data = OmegaConf.merge(cfg.data, {"seed": cfg.seed + accelerator.process_index})  # worker seeds per rank
    loader = build_loader(components.train_dataset, data, shuffle=True, batches=sent,
                          pin_memory=accelerator.device.type == "cuda",
                          collate_fn=components.collate_fn or collate_samples)
    return _MicroBatches(loader, sent, state, batches, components.train_dataset)


class _SentBatches:
    """The batch sampler, remembering the index lists handed to the workers and not yet received."""

    def __init__(self, batches: EndlessBatches) -> None:
        self.batches = batches
        self.pending: collections.deque[list[int]] = collections.deque()

    def __iter__(self) -> Iterator[list[int]]:
        for indices in self.batches:
            self.pending.append(list(indices))
            yield indices


def _sources(dataset, indices: list[int]) -> str:
    """``; trajectories <paths>`` for a dataset that knows the file of each sample, else ''."""
    trajectories, sample_traj = getattr(dataset, "trajectories", None), getattr(dataset, "sample_traj", None)
    if trajectories is None or sample_traj is None:
        return ""
    paths = sorted({str(trajectories[int(sample_traj[i])].path) for i in indices})
    return f"; trajectories {', '.join(paths)}"


def train_metrics(accelerator: Accelerator, meter: IntervalMeter, scheduler, grad_norm, state: TrainState,
                  components: Components) -> dict:
    """The log step's training figures: loss (mean over processes), lr, grad norm, throughput, memory."""
    summary = meter.summary()
    loss = accelerator.reduce(torch.as_tensor(summary["loss"], device=accelerator.device).float(), "mean")
    values = {
        **summary,
        "loss": loss.item(),
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": float(grad_norm),
        "epoch": state.epoch,
        "samples_seen": state.samples_seen,
        "host_rss_bytes": host_rss_bytes(),
        "sensor_cache_bytes": cache_nbytes(components.train_dataset),
        **gpu_memory(accelerator.device),
    }
    meter.reset()
    return values


@torch.no_grad()
def validate(accelerator: Accelerator, model, loader: BatchLoader, max_batches: int | None) -> float:
    """Mean loss over the held-out split (each process its shard), weighted by batch size."""
    model.eval()
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = send_to_device(batch, accelerator.device, non_blocking=True)
        n = _batch_len(batch)
        total += torch.stack([model(batch)["loss"].double() * n, torch.tensor(float(n), device=total.device)])
    total = accelerator.reduce(total, "sum")
    model.train()
    return (total[0] / total[1].clamp(min=1)).item()


def _batch_len(batch) -> int:
    """Samples in a batch: its ``actions`` rows (``pixel_values`` are patches, not samples), else any tensor's."""
    if isinstance(batch, dict) and isinstance(batch.get("actions"), torch.Tensor):
        return len(batch["actions"])
    for value in (batch.values() if isinstance(batch, dict) else batch):
        if isinstance(value, torch.Tensor):
            return len(value)
    return 1


def start_trackers(cfg: DictConfig, accelerator: Accelerator, run_dir: Path, state: TrainState,
                   resumed: bool) -> None:
    """metrics.jsonl in the run directory; W&B offline unless asked, resuming the same W&B run id."""
    init_kwargs: dict = {}
    for tracker in accelerator.log_with:
        if isinstance(tracker, JsonlTracker):
            tracker.path = run_dir / "metrics.jsonl"
            tracker.resume_step = state.step if resumed else None
    wb = cfg.logger.wandb
    if wb.enabled:
        if accelerator.is_main_process and state.wandb_run_id is None:
            state.wandb_run_id = secrets.token_hex(4)  # saved in checkpoints: a resume continues this W&B run
        mode = choice(wb.mode) if wb.mode is not None else os.environ.get("WANDB_MODE", "offline")
        init_kwargs["wandb"] = {
            "dir": str(run_dir),
            "mode": mode,
            "id": state.wandb_run_id,
            "resume": "allow",
            "group": wb.group or sweep_group(),
            "name": wb.name or job_name(run_dir),
            "tags": list(wb.tags),
            "entity": wb.entity,
        }
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    accelerator.init_trackers(cfg.logger.wandb.project, config=config, init_kwargs=init_kwargs)


def export(model: torch.nn.Module, components: Components, cfg: DictConfig, out: Path) -> None:
    """Final weights (the model's own format), resolved config and extras, written atomically."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if components.export is not None:
        components.export(model, tmp)
    else:
        model.save_pretrained(tmp)
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    for name, payload in components.export_files.items():
        (tmp / name).write_text(json.dumps(payload, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
