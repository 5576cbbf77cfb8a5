"""Stopping cleanly when the cluster asks: Slurm sends SIGUSR1 before the time limit (sbatch
`--signal=USR1@…`) and SIGTERM before preempting or cancelling. Training finishes the current
epoch, writes its checkpoint atomically and exits with EXIT_REQUEUE, so the job script can
`scontrol requeue` it; the requeued run continues with resume=auto. ^C (SIGINT) does the same
at a terminal, for a local sweep's worker processes too (joblib's workers ignore ^C otherwise,
and trained on after their parent had died of it); a second ^C stops at once."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from flowpwm.rundir import remove_if_empty

EXIT_REQUEUE = 75  # sysexits EX_TEMPFAIL: stopped early on request, run it again to continue
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after writing its checkpoint."""


_stopped = False  # a run of this process stopped on a signal; kept after that run ended (`sweep_job`)


@contextmanager
def sweep_job(command: str, output_dir: Path):
    """One Hydra job of `flowpwm <command>`: a stop (Preempted) exits with EXIT_REQUEUE, and once
    one has, no later job of this process starts. hydra/launcher=local runs a sweep in joblib
    worker processes that take the jobs queued for them one after another, and outlive a parent
    killed by the same SIGTERM: without this, a stopped sweep went on starting its queued runs."""
    global _stopped
    try:
        if _stopped:
            remove_if_empty(output_dir)
            raise Preempted(f"a stop signal during an earlier run of this sweep: {output_dir.name} was not "
                            f"started; run the sweep again with resume=auto to continue")
        yield
    except Preempted as e:
        _stopped = True
        print(f"flowpwm {command}: stopped on {e}", file=sys.stderr)
        raise SystemExit(EXIT_REQUEUE) from None


class StopSignals:
    """While active, SIGUSR1/SIGTERM/SIGINT only set `received` (their name); the loop decides when
    to stop. Handlers can only be installed from the main thread: elsewhere this does nothing."""

    def __init__(self):
        self.received: str | None = None
        self._signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, _frame) -> None:
        if signum == signal.SIGINT:
            if self.received == "SIGINT":
                raise KeyboardInterrupt  # the second ^C: now, without a checkpoint
            print("\n^C: stopping after this epoch's checkpoint (^C again: at once, without it)", file=sys.stderr)
        self.received, self._signum = signal.Signals(signum).name, signum

    def forward(self) -> None:
        """After our checkpoint, run the handler that was installed before ours (submitit's,
        which requeues the job and exits); plain default handlers are not called. SIGTERM is
        ignored meanwhile, by the commands it starts too: Slurm's requeue SIGTERMs every process
        of the job, the `scontrol requeue` that asked for it included, and a requeue command
        killed that way fails the job although it was requeued (seen on a loaded node)."""
        old = self._old.get(self._signum)
        if callable(old) and self._signum != signal.SIGINT:  # ^C's default raises KeyboardInterrupt
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited across exec; __exit__ restores
            old(self._signum, None)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
