"""``train.py`` with one injected fault, chosen by ``VLA_FAULT=<point>@<n>`` (used by the reliability tests).

Run as ``python -m tests.reliability.faulty_train <train.py overrides>``. The fault fires on the n-th
time (1-based, counted in this process) the point is reached:

- ``step``: SIGKILL inside an optimizer step (after forward/backward, before the update).
- ``save_write``: SIGKILL inside ``save_state``, after the model file, before the optimizer file.
- ``before_rename``: SIGKILL once ``COMPLETE`` is written, before ``.tmp_step_*`` is renamed.
- ``prune``: SIGKILL half-way through deleting an old checkpoint (one file gone).
- ``metrics``: SIGKILL after half a ``metrics.jsonl`` line is written (a torn line).
- ``cache``: SIGKILL while the mmap sensor cache's temp file is half written.
- ``enospc``: ``OSError(ENOSPC)`` inside ``save_state`` (disk full), after the model file.
- ``readonly``: every write under ``output_dir`` fails with ``EROFS`` (a read-only mount); n is ignored.

The kill is a real SIGKILL of this process: nothing is flushed or cleaned up, as after a crash.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import runpy
import signal
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _Countdown:
    def __init__(self, n: int) -> None:
        self.left = n

    def hit(self) -> bool:
        self.left -= 1
        return self.left == 0


def _wrap(owner: object, name: str, before: Callable[..., None]) -> None:
    original = getattr(owner, name)

    def patched(*args, **kwargs):
        before(*args, **kwargs)
        return original(*args, **kwargs)

    setattr(owner, name, patched)


def _save_fault(n: int, action: Callable[[], None]) -> None:
    """``action`` on the second file write (model done, optimizer not) of the n-th ``save_state``."""
    import accelerate
    import accelerate.checkpointing as ckpt

    count = _Countdown(n)
    armed = {"on": False, "writes": 0}
    _wrap(accelerate.Accelerator, "save_state", lambda *a, **k: armed.update(on=count.hit(), writes=0))

    def on_write(*args, **kwargs) -> None:
        if armed["on"]:
            armed["writes"] += 1
            if armed["writes"] == 2:
                action()

    _wrap(ckpt, "save", on_write)


def _enospc() -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _readonly(output_dir: str) -> None:
    root = os.path.realpath(output_dir)

    def under(path) -> bool:
        try:
            return os.path.realpath(os.fspath(path)).startswith(root)
        except TypeError:  # a file descriptor
            return False

    def refuse(path) -> None:
        raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and under(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if under(path) and os.path.exists(path):
            raise FileExistsError(errno.EEXIST, "File exists", os.fspath(path))
        if under(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    builtins.open = io.open = open_
    os.open, os.mkdir = os_open, mkdir


def install(spec: str, argv: list[str]) -> None:
    if not spec:
        return
    point, _, n_text = spec.partition("@")
    n = int(n_text or 1)
    if point == "step":
        import torch

        count = _Countdown(n)
        _wrap(torch.optim.AdamW, "step", lambda *a, **k: count.hit() and _die())
    elif point == "save_write":
        _save_fault(n, _die)
    elif point == "enospc":
        _save_fault(n, _enospc)
    elif point == "before_rename":
        count = _Countdown(n)
        _wrap(Path, "rename", lambda self, *a: self.name.startswith(".tmp_step_") and count.hit() and _die())
    elif point == "prune":
        import shutil

        count = _Countdown(n)
        real_rmtree = shutil.rmtree

        def rmtree(path, *args, **kwargs):
            p = Path(path)
            complete = p.name.startswith(("step_", ".deleting_step_"))  # not a temp dir being replaced
            if complete and (p / "model.safetensors").is_file() and count.hit():
                (p / "model.safetensors").unlink()  # a deletion in progress: files go one by one
                _die()
            return real_rmtree(path, *args, **kwargs)

        shutil.rmtree = rmtree
    elif point == "metrics":
        from vla_sensor.training.metrics import JsonlTracker

        count = _Countdown(n)
        real_log = JsonlTracker.log

        def log(self, values, step=None, **kwargs):
            if count.hit():
                with open(self.path, "a") as f:
                    f.write(f'{{"step": {step}, "loss": 0.12')
                _die()
            return real_log(self, values, step=step, **kwargs)

        JsonlTracker.log = log
    elif point == "cache":
        import numpy as np

        count = _Countdown(n)
        real_header = np.lib.format.write_array_header_1_0

        def write_header(f, header, *args, **kwargs):
            real_header(f, header, *args, **kwargs)
            if ".tmp" in str(getattr(f, "name", "")) and count.hit():  # the mmap cache's temp file
                f.write(b"\0" * 4096)  # a header and some rows, then the crash
                f.flush()
                _die()

        np.lib.format.write_array_header_1_0 = write_header
    elif point == "readonly":
        out = next(a.split("=", 1)[1] for a in argv if a.startswith("output_dir="))
        _readonly(out)
    else:
        raise SystemExit(f"VLA_FAULT: unknown fault point {point!r}")


if __name__ == "__main__":
    install(os.environ.get("VLA_FAULT", ""), sys.argv[1:])
    sys.argv = [str(REPO / "train.py"), *sys.argv[1:]]
    runpy.run_path(str(REPO / "train.py"), run_name="__main__")
