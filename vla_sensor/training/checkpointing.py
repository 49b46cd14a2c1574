"""Atomic, keep-last-K training checkpoints and finding the one to resume from.

A checkpoint is ``<run_dir>/checkpoints/step_0000100/``: Accelerate's ``save_state`` (model,
optimizer, scheduler, RNG of every process, registered objects such as the EMA) plus
``trainer_state.json`` (step, data position, W&B run id). It is written under a temporary name and
renamed once complete, with a ``COMPLETE`` marker, so a run killed mid-save leaves nothing that
resume would pick up. Before the marker, ``MANIFEST.json`` records every file's name, size and SHA-256;
a resume verifies them before loading, so a checkpoint damaged later (a truncated or overwritten
file, a disk error) is skipped with its reason (``trainer.resume=auto``) or refused naming the file
(an explicit ``trainer.resume=<checkpoint>``), never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"
MANIFEST = "MANIFEST.json"
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


def resolve_resume(resume: str | None, run_dir: Path, verify: bool = True) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start.

    ``None``: fresh; an output directory that already holds checkpoints is an error (pass
    ``trainer.resume=auto`` to continue it). ``auto``: the newest intact checkpoint of ``run_dir``
    (damaged newer ones are skipped with a warning saying why), fresh if there is none (resubmit the
    same command after preemption). A path: a checkpoint directory (refused, naming the file, when
    damaged), or a run directory whose newest intact checkpoint is used; nothing there is an error.
    ``verify=False`` only locates the checkpoint (no file is read).
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
        return newest_intact(run_dir) if verify else latest_checkpoint(run_dir)
    path = Path(resume).expanduser()
    if is_checkpoint(path):
        problem = damage(path) if verify else None
        if problem is not None:
            others = [c.name for c in complete_checkpoints(run_dir_of(path)) if c.resolve() != path.resolve()]
            raise ResumeError(
                f"trainer.resume={resume}: the checkpoint is damaged: {problem}. "
                + (f"Other checkpoints of this run: {', '.join(others)} (trainer.resume=auto picks the newest "
                   "intact one)." if others else "The run has no other checkpoint.")
            )
        return path.resolve()
    if path.is_dir():
        latest = newest_intact(path) if verify else latest_checkpoint(path)
        if latest is not None:
            return latest
        raise ResumeError(
            f"trainer.resume={resume}: no complete checkpoint in this directory "
            f"(expected {path / CHECKPOINTS}/step_XXXXXXX with a {MARKER} marker)"
        )
    raise ResumeError(f"trainer.resume={resume}: no such checkpoint or run directory")


def agree_on_checkpoint(resume: str | None, run_dir: Path, accelerator) -> Path | None:
    """:func:`resolve_resume` on rank 0 alone (it reads every file once), broadcast to every rank."""
    from vla_sensor.training.rank_zero import decided_on_rank0

    def decide() -> str | None:
        found = resolve_resume(resume, run_dir)
        return None if found is None else str(found)

    chosen = decided_on_rank0(accelerator, decide, (ResumeError,), ResumeError)
    return None if chosen is None else Path(chosen)


def newest_intact(run_dir: Path) -> Path | None:
    """The newest complete checkpoint whose files match its manifest; each damaged newer one is logged.

    Raises :class:`ResumeError` when checkpoints exist but every one is damaged (starting afresh
    would silently discard the run).
    """
    skipped = []
    for ckpt in reversed(complete_checkpoints(run_dir)):
        problem = damage(ckpt)
        if problem is None:
            return ckpt
        log.warning("skipping damaged checkpoint %s: %s", ckpt, problem)
        skipped.append(f"{ckpt.name}: {problem}")
    if skipped:
        raise ResumeError(
            f"{run_dir}: every checkpoint is damaged, nothing to resume from:\n  " + "\n  ".join(skipped)
            + "\nMove them away to start afresh, or choose another output_dir."
        )
    return None


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 4 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(4 << 20):
            h.update(piece)
    return h.hexdigest()


def write_manifest(checkpoint: Path) -> None:
    """Record every file of ``checkpoint`` (name, size, SHA-256) in ``MANIFEST.json``."""
    files = {
        str(p.relative_to(checkpoint)): {"size": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name not in (MANIFEST, MARKER)
    }
    (checkpoint / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def damage(checkpoint: Path) -> str | None:
    """What is wrong with ``checkpoint``'s files against its manifest (naming the file), None if intact.

    A checkpoint written before manifests existed has none: it is accepted unverified.
    """
    path = Path(checkpoint) / MANIFEST
    if not path.is_file():
        log.info("%s has no %s (an older checkpoint): loading it unverified", checkpoint, MANIFEST)
        return None
    try:
        files = json.loads(path.read_text())["files"]
        entries = [(name, int(e["size"]), str(e["sha256"])) for name, e in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{path} is unreadable ({type(exc).__name__}: {exc})"
    for name, size, _ in entries:
        f = Path(checkpoint) / name
        if not f.is_file():
            return f"{f} is missing (the manifest lists it)"
        actual = f.stat().st_size
        if actual != size:
            return f"{f} has {actual} bytes, the manifest records {size} ({'truncated' if actual < size else 'grown'})"
    for name, _, digest in entries:  # sizes first: a truncated file is found without hashing the others
        f = Path(checkpoint) / name
        if file_digest(f) != digest:
            return f"{f} does not match its SHA-256 in the manifest (its bytes changed after it was written)"
    return None


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
            write_manifest(tmp)  # every file is written: record what the checkpoint holds
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
    try:
        accelerator.load_state(str(checkpoint))
        return TrainState.from_file(Path(checkpoint) / STATE_FILE)
    except Exception as exc:  # an unverified (pre-manifest) checkpoint: say which one, not a bare zip error
        raise ResumeError(f"checkpoint {checkpoint} could not be loaded ({type(exc).__name__}: {exc}); "
                          "resume from an earlier one with trainer.resume=<checkpoint>") from exc
