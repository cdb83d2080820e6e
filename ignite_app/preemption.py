"""Preemption: SIGTERM, SIGINT and SIGUSR1 (what Slurm, Kubernetes, a W&B sweep agent and Ctrl-C send) stop training
cleanly instead of killing it: the current iteration finishes (an epoch's last one finishes its validation and
checkpoint too), every rank stops at the same iteration (`App.request_stop`), a checkpoint of that instant is written,
the W&B run is marked preempting and closed, and the process exits 128 + the signal's number (143 for SIGTERM).
`--auto-resume` then continues bit-exactly. A second Ctrl-C exits at once: the newest checkpoint on disk stays valid.

    with Preemption(app.request_stop) as preemption:   # installs the handlers, restores the previous ones after
        trainer.run(...)
    if preemption.signum: ...                           # checkpoint, mark preempting, raise Preempted
    with Preemption(doing=FINISHING): ...               # after training: a signal is announced, the run finishes
    with Preemption(doing=STARTING): ...                # start-up: nothing to checkpoint yet, so stop at once
    with Preemption(doing=CLOSING, signalled=signum):   # after a stop for `signum`: a Ctrl-C now is the second
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Optional

from ignite_app.errors import AppError

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preempted(AppError):
    """Training was stopped by a signal after writing a checkpoint; exit code 128 + the signal's number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


# what a signal does while training, and once training is complete (the test evaluation, W&B's close): the run's
# results are seconds away then, and the default action (SIGTERM kills at once) would lose them and leave W&B open
STOPPING = "finishing this iteration, then writing a checkpoint and exiting (rerun with --auto-resume to continue)"
FINISHING = ("training is complete; finishing the test evaluation (and the ONNX export) and closing W&B (seconds), "
             "then exiting")
CLOSING = "closing W&B and the checkpoint uploads (seconds), then exiting"
# before the first iteration nothing is trained yet: stop at once, with a message instead of the default silent death
STARTING = "stopping the start-up at once (no training yet, so no checkpoint is written)"


class Preemption:
    """Signal handlers that ask the trainer to stop (Python runs them in the main thread between bytecodes, so the
    iteration in progress completes first); installed only in the main thread, where Python allows them."""

    def __init__(self, request_stop: Optional[Callable[..., None]] = None, doing: str = STOPPING,
                 signalled: Optional[int] = None) -> None:
        """`signalled`: the signal an earlier phase already received (its stop is under way), so that a Ctrl-C in
        this phase is the second one and exits at once."""
        self.request_stop, self.doing = request_stop, doing
        self.signum: Optional[int] = signalled
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: the user wants out now
                os.write(2, b"\nSecond interrupt: exiting at once (the newest checkpoint on disk stays valid).\n")
                os._exit(128 + signum)
            return
        self.signum = signum
        if self.doing == STARTING:
            raise Preempted(f"Stopped by {name} during start-up, before the first training iteration: nothing was "
                            "trained, so there is nothing to checkpoint. Rerun the same command to start again.", signum)
        # os.write, not print: a signal handler can interrupt a print to the same stream
        os.write(2, f"\n{name} received: {self.doing}; Ctrl-C again exits at once.\n".encode())
        if self.request_stop is not None:
            self.request_stop(f"{name} received", preempt=True)
