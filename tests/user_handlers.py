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
        if app.uploader is not None:  # let queued artifact uploads reach W&B
            app.uploader.wait()
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


# ---------------------------------------------------------------- several processes (tests/test_distributed_e2e.py)


def record_rank(app, directory: str) -> None:
    """Each rank writes what it saw to DIRECTORY/rank<N>.json: its final iteration, its validation and test metrics,
    the training loss its handlers saw each iteration (a test's window into the ranks that do not log to W&B)."""
    import ignite.distributed as idist

    path = os.path.join(directory, f"rank{idist.get_rank()}.json")
    losses = []
    app.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(engine.state.output))

    def write(_=None):
        import json

        with open(path, "w") as f:
            json.dump({"iteration": app.trainer.state.iteration, "world_size": idist.get_world_size(),
                       "validation": {k: float(v) for k, v in app.evaluator.state.metrics.items()},
                       "test": {k: float(v) for k, v in app.test_evaluator.state.metrics.items()},
                       "stop_reason": app.stop_together.reason, "losses": losses}, f)

    app.trainer.add_event_handler(Events.TERMINATE, write)
    app.trainer.add_event_handler(Events.COMPLETED, write)
    app.test_evaluator.add_event_handler(Events.COMPLETED, write)


def kill_job_at(app, iteration: int) -> None:
    """At `iteration`, rank 0 SIGKILLs the whole job, as a lost machine would: every worker, the launcher (its parent,
    torchrun) and itself; after that iteration's checkpoint is written."""
    import ignite.distributed as idist

    @app.trainer.on(Events.ITERATION_COMPLETED(once=iteration))
    def _kill(_):
        if idist.get_rank() != 0:
            return
        if app.uploader is not None:
            app.uploader.wait()
        launcher = os.getppid()
        tasks = os.listdir(f"/proc/{launcher}/task")
        workers = {int(pid) for task in tasks for pid in open(f"/proc/{launcher}/task/{task}/children").read().split()}
        for pid in sorted(workers - {os.getpid()}) + [launcher, os.getpid()]:
            os.kill(pid, signal.SIGKILL)


def nan_on_rank(app, rank: int, iteration: int) -> None:
    """On one rank only, an absurd learning rate from `iteration` on: that rank's loss becomes NaN soon after."""
    import ignite.distributed as idist

    if idist.get_rank() == rank:
        blow_up_at(app, iteration)


def die_on_rank(app, rank: int, iteration: int) -> None:
    """SIGKILL one rank at `iteration`; the others are left waiting in the next collective."""
    import ignite.distributed as idist

    @app.trainer.on(Events.ITERATION_COMPLETED(once=iteration))
    def _die(_):
        if idist.get_rank() == rank:
            os.kill(os.getpid(), signal.SIGKILL)


def fail_on_rank(app, rank: int, iteration: int) -> None:
    """A handler that raises on one rank only, at `iteration`."""
    import ignite.distributed as idist

    @app.trainer.on(Events.ITERATION_COMPLETED(once=iteration))
    def _fail(_):
        if idist.get_rank() == rank:
            raise ValueError(f"a user handler failed on rank {rank}")


def signal_at(app, iteration: int, signame: str = "SIGTERM") -> None:
    """Send this process `signame` once the trainer completes `iteration` (what a scheduler's preemption does)."""

    @app.trainer.on(Events.ITERATION_COMPLETED(once=iteration))
    def _signal(_):
        os.kill(os.getpid(), getattr(signal, signame))


def pause_at(app, iteration: int, until: str) -> None:
    """Once the trainer completes `iteration` (after that iteration's checkpoint), wait until the file `until`
    exists: a test holds a live run at a known instant while it starts another process beside it."""

    @app.trainer.on(Events.ITERATION_COMPLETED(once=iteration))
    def _pause(_):
        while not os.path.exists(until):
            time.sleep(0.05)


def signal_in_test(app, signame: str = "SIGTERM") -> None:
    """Send this process `signame` during the test evaluation, once training is complete."""

    @app.test_evaluator.on(Events.ITERATION_COMPLETED(once=1))
    def _signal(_):
        os.kill(os.getpid(), getattr(signal, signame))


def terminate_at(app, iteration: int) -> None:
    """Stop training from a user's handler: `trainer.terminate()` once the trainer completes `iteration`."""

    @app.trainer.on(Events.ITERATION_COMPLETED(once=iteration))
    def _stop_here(engine):
        engine.terminate()
