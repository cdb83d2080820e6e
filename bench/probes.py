"""Handlers the benchmark attaches to `scripts/train.py` with `--handler bench/probes.py:NAME`.

Each prints one line `BENCH {json}` that bench/run.py parses.
"""
from __future__ import annotations

import json
import time

from ignite.engine import Events


def _emit(**values) -> None:
    print("BENCH " + json.dumps(values), flush=True)


def first_iteration(app) -> None:
    """The wall-clock time (time.time()) when the first training iteration completes."""
    app.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda _: _emit(first_iteration=time.time()))


def training_time(app) -> None:
    """Seconds of the last epoch's iterations as Ignite measured them (iteration handlers included, the
    EPOCH_COMPLETED handlers such as validation not): the figure comparable with the bare loop's."""

    @app.trainer.on(Events.COMPLETED)
    def _done(engine):
        _emit(train_seconds=engine.state.times["EPOCH_COMPLETED"], iterations=engine.state.iteration)


def time_to_accuracy(app, target: float = 0.90) -> None:
    """Evaluate the test set after every epoch; report the wall time at which accuracy first reaches `target`."""
    start = time.time()

    @app.trainer.on(Events.EPOCH_COMPLETED)
    def _check(engine):
        app.test_evaluator.run(app.loaders.test)
        accuracy = app.test_evaluator.state.metrics["accuracy"]
        _emit(epoch=engine.state.epoch, test_accuracy=accuracy, seconds_since_start=time.time() - start,
              at=time.time())
        if accuracy >= target:
            _emit(reached=target, epoch=engine.state.epoch, seconds_since_start=time.time() - start)
            engine.terminate()
