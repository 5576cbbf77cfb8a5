"""Stopping cleanly when the cluster asks: Slurm sends SIGUSR1 before the time limit (sbatch
`--signal=USR1@…`) and SIGTERM before preempting or cancelling. Training finishes the current
epoch, writes its checkpoint atomically and exits with EXIT_REQUEUE, so the job script can
`scontrol requeue` it; the requeued run continues with resume=auto."""

from __future__ import annotations

import signal
import threading

EXIT_REQUEUE = 75  # sysexits EX_TEMPFAIL: stopped early on request, run it again to continue
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(Exception):
    """Training stopped on a signal after writing its checkpoint."""


class StopSignals:
    """While active, SIGUSR1/SIGTERM only set `received` (their name); the loop decides when to
    stop. Handlers can only be installed from the main thread: elsewhere this does nothing."""

    def __init__(self):
        self.received: str | None = None
        self._signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, _frame) -> None:
        self.received, self._signum = signal.Signals(signum).name, signum

    def forward(self) -> None:
        """After our checkpoint, run the handler that was installed before ours (submitit's,
        which requeues the job and exits); plain default handlers are not called. SIGTERM is
        ignored meanwhile, by the commands it starts too: Slurm's requeue SIGTERMs every process
        of the job, the `scontrol requeue` that asked for it included, and a requeue command
        killed that way fails the job although it was requeued (seen on a loaded node)."""
        old = self._old.get(self._signum)
        if callable(old):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited across exec; __exit__ restores
            old(self._signum, None)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
