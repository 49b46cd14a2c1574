"""Stop signals: finish the step, checkpoint, stop; under submitit, hand the job back to be requeued.

SIGTERM (``scancel``, ``scontrol requeue``, a cluster's preemption), SIGUSR1 and submitit's preemption
signal (SIGUSR2, or ``$SUBMITIT_PREEMPT_SIGNAL``; SLURM sends it ``signal_delay_s`` before the time
limit, or ``scancel --signal=USR2``) only set a flag. The loop reads it after every optimizer step,
all processes agree on it, and that step is the stop step: every rank saves the checkpoint of that
step, then the run ends as a stopped run (no ``final/``).

Under submitit's job runner the handlers replaced are submitit's. After the run has stopped and its
process group is gone, :meth:`StopRequest.hand_back` gives the job back to submitit instead of
returning a result: for the preemption signal it calls submitit's own handler (rank 0 writes the
requeue pickle, ``scontrol requeue``, ``max_num_timeout`` counted by submitit; the other ranks log
and leave), for SIGTERM and SIGUSR1 it leaves without a result (SLURM requeues or cancels the job itself). The
requeued job runs the same command, and ``trainer.resume=auto`` continues from the stop step's
checkpoint. Only the main process of each task runs any of this: DataLoader workers ignore the
signals (:mod:`vla_sensor.data.worker_signals`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import torch

log = logging.getLogger(__name__)


def preemption_signal() -> signal.Signals:
    """submitit's preemption signal: ``SIGUSR2`` unless ``$SUBMITIT_PREEMPT_SIGNAL`` names another."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    if not hasattr(signal, name):
        raise ValueError(f"SUBMITIT_PREEMPT_SIGNAL={name[3:]!r} is not a signal name (e.g. USR2)")
    return signal.Signals(getattr(signal, name))


def _is_submitit_handler(handler) -> bool:
    """A bound method of submitit's ``SignalHandler`` (installed by its job runner before the task)."""
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit.")


class StopRequest:
    """The stop flag and its signal handlers, installed for one training run (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped_at: int | None = None  # the step the loop stopped at because of the signal
        self.preempt = preemption_signal()
        self._previous: dict = {}
        self._group = None
        if threading.current_thread() is threading.main_thread():
            for s in dict.fromkeys((signal.SIGTERM, signal.SIGUSR1, self.preempt)):
                self._previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            log.warning("received %s: the run stops after this step with a checkpoint",
                        signal.Signals(signum).name)
        self.signum = signum
        if signal.SIGCHLD not in self._previous:
            # From now on a DataLoader worker's exit belongs to the stop. torch's SIGCHLD handler would raise
            # it at any line of this process; the loader's next() still reports it, where the loop expects it.
            self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def agreed(self, accelerator) -> bool:
        """Whether any process was asked to stop; a collective, called by all processes after each step.

        The flag travels over a CPU (gloo) group, so the check never waits for the GPU. A rank that
        got no signal itself takes the others': the preemption signal wins over the rest.
        """
        if accelerator.num_processes == 1:
            return self.requested
        dist = torch.distributed
        if self._group is None:
            self._group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        code = 0 if self.signum is None else 2 if self.signum == self.preempt else 1
        flag = torch.tensor([code], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        if flag.item() == 2:
            self.signum = self.preempt
        elif flag.item() == 1 and self.signum is None:
            self.signum = signal.SIGTERM
        return bool(flag.item())

    def restore(self) -> None:
        """The handlers of before the run (submitit's, or the defaults)."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def hand_back(self) -> None:
        """Under submitit, after a stop: requeue through submitit and leave without a result.

        Called once the run is torn down; returns (the caller reports its result) when the run was not
        stopped or is not a submitit job.
        """
        previous = self._previous
        if self.stopped_at is None or not _is_submitit_handler(previous.get(self.preempt)):
            return
        name, step = signal.Signals(self.signum).name, self.stopped_at
        if self.signum == self.preempt:
            log.warning("stopped by %s at step %d: submitit requeues the job (trainer.resume=auto resumes it)",
                        name, step)
            previous[self.signum](self.signum, None)  # rank 0: requeue and exit; other ranks return
            raise SystemExit(-1)  # not a result: the requeued job's is
        log.warning("stopped by %s at step %d: leaving without a result; a requeued job resumes with "
                    "trainer.resume=auto", name, step)
        raise SystemExit(0)
