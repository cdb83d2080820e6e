"""Handlers the tests attach with `--handler tests/user_handlers.py:NAME` (a user's own file, as the README shows)."""
import os
import signal
import time

import torch

from ignite.engine import Events


def kill_at(app, iteration: int, seconds: float = 0.0) -> None:
    """SIGKILL this process once the trainer completes `iteration` (after that iteration's checkpoint, if any).

    `seconds` keeps the process alive a little longer first, as most crashes do (W&B flushes its run file meanwhile).
    """

    @app.trainer.on(Events.ITERATION_COMPLETED(once=iteration))
    def _kill(_):
        for saver in app.savers:  # let queued artifact uploads reach W&B
            saver.wait()
        time.sleep(seconds)
        os.kill(os.getpid(), signal.SIGKILL)


class Unexportable(torch.nn.Module):
    """Branches on the data: runs in eager PyTorch, but torch.export (the dynamo ONNX exporter) refuses it."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(784, 10)

    def forward(self, x):
        x = x.flatten(1).float()
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def break_onnx(app) -> None:
    """Make the ONNX export handler export a model that cannot be exported."""
    app.onnx_exporter.model = Unexportable()


def blow_up_at(app, iteration: int) -> None:
    """Set an absurd learning rate at `iteration`, so that the loss becomes NaN soon after."""

    @app.trainer.on(Events.ITERATION_COMPLETED(once=iteration))
    def _blow_up(_):
        for group in app.optimizer.param_groups:
            group["lr"] = 1e12


def count_epochs(app, key: str = "custom/epochs_seen") -> None:
    """Log a counter to W&B each epoch: proves the handler ran, through the run's own records."""
    seen = {"n": 0}

    @app.trainer.on(Events.EPOCH_COMPLETED)
    def _count(engine):
        seen["n"] += 1
        app.wandb_logger.log({key: seen["n"]}, step=engine.state.iteration)


NOT_CALLABLE = 42
