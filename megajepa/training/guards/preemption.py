"""Preemption: SIGUSR1 or SIGTERM asks for a checkpoint, then an exit a requeue understands.

The handler only records the signal. After every step all ranks all-reduce the flag (MAX), so they
agree on the same step even when the signal reached some of them later (or only one); they save one
checkpoint together and the process exits with EXIT_REQUEUE (75, EX_TEMPFAIL from sysexits.h:
"temporary failure, retry"). slurm/common.sh requeues the job on it; `resume=auto` continues from the
checkpoint just written.
"""
from __future__ import annotations

import signal

import torch
import torch.distributed as dist

EXIT_REQUEUE = 75
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(Exception):
    """Raised once every rank has saved after a stop signal; train.py turns it into EXIT_REQUEUE."""

    def __init__(self, step: int, signame: str, checkpoint: str):
        super().__init__(f"stopped after step {step} on {signame}: checkpoint {checkpoint} saved; exiting with "
                         f"{EXIT_REQUEUE} so the job is requeued (resume=auto continues from it)")
        self.step, self.checkpoint = step, checkpoint


class StopSignals:
    """Installs the handlers on creation (the main thread); `restore()` puts the previous ones back."""

    def __init__(self, signals=STOP_SIGNALS):
        self.received: int | None = None
        self._previous = {s: signal.signal(s, self._record) for s in signals}

    def _record(self, signum, frame) -> None:
        if self.received is None:  # the first signal names the stop; a repeat (srun, launcher) changes nothing
            self.received = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "none"

    def agreed(self, device: torch.device | str = "cpu") -> bool:
        """Collective: True on every rank when any rank has received a stop signal."""
        flag = torch.tensor([0.0 if self.received is None else float(self.received)], device=device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        # Decide on the reduced value only: a signal landing here, after this rank's contribution was sent,
        # is seen by every rank at the next step instead of by this rank alone now.
        agreed = int(flag.item())
        if agreed and self.received is None:
            self.received = agreed  # another rank's signal
        return agreed > 0

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def ignore_from_now(self) -> None:
        """After the stop's checkpoint: the launcher's follow-up SIGTERM (srun --kill-on-bad-exit, deepspeed's
        launch.py) must not turn a rank's 75 into 143 while it tears down. SIG_IGN, not a Python handler:
        interpreter shutdown resets Python handlers to the default (die) but leaves SIG_IGN alone."""
        for s in self._previous:
            signal.signal(s, signal.SIG_IGN)
