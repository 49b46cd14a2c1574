"""DataLoader workers leave the stop signals to the training process.

SLURM (``scancel``, ``scontrol requeue``, a preemption notice) and ``kill -- -<pgid>`` signal every
process of a job, the DataLoader workers included. A worker that died of SIGTERM, or that ran a
handler it inherited from the main process (submitit's preemption handler checkpointing and requeuing
the job from inside a worker), turned an orderly stop into a crash. Workers therefore ignore SIGTERM,
SIGINT, SIGUSR1 and SIGUSR2: the main process decides, and shuts its workers down itself.

One exception keeps the loader's own last resort working: a SIGTERM sent by the worker's parent (the
DataLoader terminating a worker that did not exit when asked) still ends it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold the stop signals in this thread while DataLoader workers are started.

    A forked worker inherits the blocked mask, so it cannot run one of the parent's handlers before
    :func:`ignore_stop_signals` ran in it; a signal arriving meanwhile reaches this process when the
    block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """A DataLoader ``worker_init_fn``: ignore the stop signals; SIGTERM from the parent still exits."""
    for signum in STOP_SIGNALS:
        if signum != signal.SIGTERM:
            signal.signal(signum, signal.SIG_IGN)
    # SIGTERM stays blocked in every thread of the worker and is collected by one thread, which can see
    # who sent it (a Python handler cannot).
    signal.signal(signal.SIGTERM, _ignore)  # in case a thread started before this point receives it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS) - {signal.SIGTERM})
    signal.signal(signal.SIGCONT, signal.SIG_DFL)  # SLURM sends it with SIGTERM; the parent's handler may log
    threading.Thread(target=_exit_on_parents_sigterm, args=(os.getppid(),), name="sigterm-from-parent",
                     daemon=True).start()


def _ignore(signum, frame) -> None:
    pass


def _exit_on_parents_sigterm(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:
            os._exit(0)
