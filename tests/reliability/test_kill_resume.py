"""SIGKILL at seeded moments (mid-step, mid-checkpoint, before the rename, mid-prune, mid-log), then
``trainer.resume=auto``: the run ends with the weights of an uninterrupted run and one clean metrics log.

One run directory takes every fault in turn (a chain of launches, as a preemptible job resubmitted
after each crash), so the faults also meet each other's debris.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.reliability.helpers import (
    assert_killed,
    assert_ok,
    launch,
    metric_steps,
    resumed_from,
    trainer_state,
    wandb_ids,
)
from tests.training.helpers import TOY_ARGS, read_metrics
from vla_sensor.training.checkpointing import complete_checkpoints, latest_checkpoint

SAVE_EVERY = 4
# 64 samples, batches of 8, 2 micro-batches per step: 4 optimizer steps per epoch; dropout, EMA and
# the schedule all have to be restored for the weights to match.
COMMON = [*TOY_ARGS, "logger=default", "trainer.max_steps=16", f"trainer.save_every={SAVE_EVERY}",
          "trainer.keep_last=2", "trainer.grad_accum_steps=2", "trainer.ema.enabled=true", "trainer.ema.decay=0.9"]
TOY_ENV = {"VLA_TOY_SAMPLES": "64"}


def _args(run: Path, *extra: str) -> list[str]:
    return [*COMMON, f"output_dir={run}", "trainer.resume=auto", *extra]


def _assert_no_broken_checkpoint(run: Path) -> None:
    """Every checkpoint resume could pick is whole (a half-deleted or half-written one is not listed)."""
    for ckpt in complete_checkpoints(run):
        for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
            assert (ckpt / name).is_file(), f"{ckpt.name} is listed as complete but lacks {name}"


def test_kill_chain_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    rng = random.Random(8)  # the kill moments: random, but the same on every CI run
    straight = tmp_path / "straight"
    assert_ok(launch(_args(straight), tmp_path, **TOY_ENV))

    run = tmp_path / "run"
    kill_step = rng.randint(SAVE_EVERY + 1, 2 * SAVE_EVERY - 1)
    faults = [
        # (fault, checkpoint the next launch must resume from)
        (f"step@{kill_step}", SAVE_EVERY),  # optimizer step kill_step never finishes
        ("save_write@1", SAVE_EVERY),  # step 8's checkpoint half written under .tmp_step_0000008
        ("before_rename@1", SAVE_EVERY),  # step 8's checkpoint whole and marked, but never renamed
        (f"metrics@{rng.randint(1, 3)}", SAVE_EVERY),  # a torn last line in metrics.jsonl
        ("prune@1", 3 * SAVE_EVERY),  # step 4's checkpoint half deleted after step 12's was saved
        (f"step@{rng.randint(1, SAVE_EVERY - 1)}", 3 * SAVE_EVERY),
    ]
    expected_from: int | None = None
    for fault, next_from in faults:
        proc = launch(_args(run), tmp_path, fault, **TOY_ENV)
        assert_killed(proc)
        assert resumed_from(proc) == expected_from, (fault, proc.stderr[-3000:])
        _assert_no_broken_checkpoint(run)
        latest = latest_checkpoint(run)
        assert latest is not None and trainer_state(latest)["step"] == next_from, (fault, latest)
        expected_from = next_from
    final = launch(_args(run), tmp_path, **TOY_ENV)
    assert_ok(final)
    assert resumed_from(final) == expected_from

    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(run / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs from the uninterrupted run")

    # One log, as if the run had never stopped: every step once, in order, with the same losses.
    assert metric_steps(run) == metric_steps(straight)
    for got, want in zip(read_metrics(run), read_metrics(straight)):
        for key in ("loss", "val_loss", "lr", "samples_seen", "epoch"):
            assert got.get(key) == want.get(key), (got["step"], key)
    assert len(wandb_ids(run)) == 1, "a resume started a new W&B run"
    assert trainer_state(latest_checkpoint(run))["wandb_run_id"] in wandb_ids(run)
    _assert_no_broken_checkpoint(run)
    assert [p.name for p in complete_checkpoints(run)] == ["step_0000012", "step_0000016"]
