"""Atomic, keep-last-K training checkpoints and finding the one to resume from.

A checkpoint is ``<run_dir>/checkpoints/step_0000100/``: Accelerate's ``save_state`` (model,
optimizer, scheduler, RNG of every process, registered objects such as the EMA) plus
``trainer_state.json`` (step, data position, W&B run id). It is written under a temporary name and
renamed once complete, with a ``COMPLETE`` marker, so a run killed mid-save leaves nothing that
resume would pick up.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

CHECKPOINTS = "checkpoints"
MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d+)$")


class ResumeError(RuntimeError):
    """``trainer.resume`` or the output directory cannot be used as asked."""


@dataclass
class TrainState:
    """Where training stands; everything besides tensors that a resume needs."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches this process consumed in ``epoch``
    samples_seen: int = 0  # over all processes
    wandb_run_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> TrainState:
        return cls(**json.loads(path.read_text()))


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first; temporary or unmarked directories are ignored."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if p.is_dir() and (m := _NAME.match(p.name)) and (p / MARKER).is_file() and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = complete_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / MARKER).is_file() and (path / STATE_FILE).is_file()


def run_dir_of(checkpoint: Path) -> Path:
    """``<run_dir>/checkpoints/step_N`` -> ``<run_dir>``."""
    return checkpoint.resolve().parent.parent


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start.

    ``None``: fresh; an output directory that already holds checkpoints is an error (pass
    ``trainer.resume=auto`` to continue it). ``auto``: the latest complete checkpoint of ``run_dir``,
    fresh if there is none (resubmit the same command after preemption). A path: a checkpoint
    directory, or a run directory whose latest checkpoint is used; nothing there is an error.
    """
    if resume is None or str(resume).lower() in ("", "none", "null", "false"):
        existing = latest_checkpoint(run_dir)
        if existing is not None:
            raise ResumeError(
                f"output directory {run_dir} already holds checkpoints of a run (latest: {existing.name}). "
                "Continue it with trainer.resume=auto, or choose another output_dir."
            )
        return None
    if str(resume).lower() == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume).expanduser()
    if is_checkpoint(path):
        return path.resolve()
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
        raise ResumeError(
            f"trainer.resume={resume}: no complete checkpoint in this directory "
            f"(expected {path / CHECKPOINTS}/step_XXXXXXX with a {MARKER} marker)"
        )
    raise ResumeError(f"trainer.resume={resume}: no such checkpoint or run directory")


def save_checkpoint(accelerator, run_dir: Path, state: TrainState, keep_last: int) -> Path:
    """Save on all processes into a temporary directory; rank 0 marks it complete, renames, prunes."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / checkpoint_name(state.step)
    tmp = root / f".tmp_{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(state.to_json())
            (tmp / MARKER).write_text(f"step {state.step}\n")
    except OSError as exc:  # disk full, quota, read-only: the earlier checkpoints are untouched
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(run_dir)
        raise OSError(
            exc.errno, f"checkpoint {final.name} could not be written to {root} ({exc.strerror or exc}); "
            f"{'the previous checkpoint ' + previous.name + ' is intact' if previous else 'no earlier checkpoint'}"
            ": free space and rerun with trainer.resume=auto"
        ) from exc
    if accelerator.is_main_process:
        if final.exists():  # a resumed run re-saving a step it already saved
            _remove(final)
        tmp.rename(final)
        prune(run_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def prune(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints (``keep_last <= 0`` keeps all)."""
    if keep_last <= 0:
        return
    for old in complete_checkpoints(run_dir)[:-keep_last]:
        _remove(old)


def _remove(checkpoint: Path) -> None:
    """Delete a checkpoint so that a kill half-way never leaves a complete-looking, partial one.

    It is renamed out of the ``step_*`` namespace first (atomic), then deleted; leftovers of an
    earlier interrupted deletion are swept up too.
    """
    doomed = checkpoint.with_name(f".deleting_{checkpoint.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    checkpoint.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def load_checkpoint(accelerator, checkpoint: Path) -> TrainState:
    """Restore model, optimizer, scheduler, RNG and registered objects; return the trainer state."""
    accelerator.load_state(str(checkpoint))
    return TrainState.from_file(Path(checkpoint) / STATE_FILE)
