"""W&B history records sent from a background thread, so the training thread does not wait for them.

wandb 0.31's `run.log` does not return until W&B's own asyncio thread has sent the record to its service: a
hand-off between two threads and a socket write. On a busy 2-core machine that measured 4 ms per call on the training
thread (cProfile of an epoch, bench/analysis.md), i.e. 0.4 ms per iteration at `--log-interval 10` and 4 ms at 1,
for a step of 10-15 ms. Here the training thread only queues the call; one worker thread makes the calls in the
order they were queued, so W&B sees the same records at the same steps.

    logger = BackgroundLogWandBLogger(project=..., mode="offline")   # Ignite's WandBLogger arguments
    logger.log({"training/loss": 0.3}, step=10)   # returns at once
    logger.flush()                                 # every queued record has reached W&B (epoch ends, the test result)
    logger.close()                                 # flushes, then finishes the run

Log through `app.wandb_logger.log` to keep your records in order with ours: a direct `wandb.log` / `run.log` may
overtake queued records, and W&B drops a record whose step is below one it already has. An error of a queued call
is raised by the next `log` or `flush` on the caller's thread.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from ignite_app.wandb_disk import GuardedWandBLogger


class BackgroundLogWandBLogger(GuardedWandBLogger):
    """GuardedWandBLogger (a full WANDB_DIR costs records, not the run) whose `log` runs on a worker thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        live = self.run is not None and not getattr(self.run, "disabled", False)
        # one worker: the records reach W&B in the order they were logged (a disabled run has nothing to send)
        self._worker: Optional[ThreadPoolExecutor] = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb-log") if live else None)
        self._error: Optional[BaseException] = None

    def log(self, *args: Any, **kwargs: Any) -> None:
        self._raise_queued_error()
        if self._worker is None:
            super().log(*args, **kwargs)
            return
        self._worker.submit(self._send, args, kwargs)

    def _send(self, args: tuple, kwargs: dict) -> None:
        try:
            super().log(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by the next log or flush
            self._error = self._error or exc

    def flush(self) -> None:
        """Wait until every queued record has been handed to W&B."""
        if self._worker is not None:
            self._worker.submit(lambda: None).result()
        self._raise_queued_error()

    def _raise_queued_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        try:
            if self._worker is not None:
                self._worker.shutdown(wait=True)  # every queued record first, then W&B's finish
                self._worker = None
            self._raise_queued_error()
        finally:
            super().close()
