"""Why training stopped, recorded by what stopped it (ignite_app/stopping.py), with tiny Ignite Engines in-process
(fast tier): early stopping, a NaN loss with TerminateOnNan on and off, a user's terminate(). The same paths through
scripts/train.py are in test_stopping_e2e.py."""
import math

from ignite.engine import Engine, Events

from ignite_app.stopping import (
    DIVERGED, EARLY_STOPPING, NanWatch, RecordingEarlyStopping, RecordingTerminateOnNan, StopRecorder, divergence,
)

EPOCH_LENGTH = 4


def trainer_with(losses=None) -> tuple[Engine, StopRecorder]:
    """A trainer whose output (the loss) at iteration i is losses[i - 1] (1.0 past their end), with the recorder
    attached as attach_handlers does: before the handlers that stop training."""
    losses = losses or []
    trainer = Engine(lambda engine, batch: losses[engine.state.iteration - 1] if engine.state.iteration <= len(losses)
                     else 1.0)
    stops = StopRecorder()
    stops.attach(trainer)
    return trainer, stops


def test_early_stopping_records_itself_not_the_terminate_it_calls():
    trainer, stops = trainer_with()
    scores = {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.65, 5: 0.9}  # best at epoch 2; patience 2 runs out at epoch 4
    early = RecordingEarlyStopping(stops, 2, score_function=lambda engine: scores[engine.state.epoch], trainer=trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, early)
    trainer.run(range(EPOCH_LENGTH), max_epochs=5)
    assert trainer.state.epoch == 4
    assert stops.reason.summary == EARLY_STOPPING and stops.reason.iteration == 4 * EPOCH_LENGTH
    assert stops.reason.message == "Early stopping after epoch 4: validation accuracy did not improve for 2 epoch(s)"


def test_a_run_that_ends_normally_records_nothing():
    trainer, stops = trainer_with()
    early = RecordingEarlyStopping(stops, 2, score_function=lambda engine: engine.state.epoch, trainer=trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, early)
    trainer.run(range(EPOCH_LENGTH), max_epochs=3)
    assert trainer.state.epoch == 3 and stops.reason is None


def test_nan_with_terminate_on_nan_stops_at_once_and_blames_the_flag():
    trainer, stops = trainer_with([1.0, 0.5, math.nan])
    trainer.add_event_handler(Events.ITERATION_COMPLETED, RecordingTerminateOnNan(stops))
    trainer.run(range(EPOCH_LENGTH), max_epochs=3)
    assert trainer.state.iteration == 3
    assert (stops.reason.summary, stops.reason.iteration) == (DIVERGED, 3)  # not the unclaimed terminate()
    assert stops.reason.message == "the loss became NaN or infinite at iteration 3 (--terminate-on-nan stopped training)"
    what, summary, last = divergence(stops, None, trainer.state.iteration, lambda: "checkpoint_2.pt")
    assert what == f"Training stopped at iteration 3: {stops.reason.message}"
    assert summary == {"stopped": DIVERGED, "stopped_at_iteration": 3} and last == "checkpoint_2.pt"


def test_nan_without_terminate_on_nan_runs_on_and_does_not_blame_the_flag():
    trainer, stops = trainer_with([1.0, 0.5, 0.4, 0.3, math.inf, math.nan, math.nan, math.nan])
    written: list[str] = []
    watch = NanWatch(lambda: written[-1] if written else None)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, watch)  # before the checkpoints, as attach_handlers does
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=2),
                              lambda engine: written.append(f"checkpoint_{engine.state.iteration}.pt"))
    trainer.run(range(EPOCH_LENGTH), max_epochs=2)
    assert trainer.state.iteration == 2 * EPOCH_LENGTH and stops.reason is None  # nobody stopped it
    assert watch.first_iteration == 5 and watch.checkpoint_before == "checkpoint_4.pt"
    what, summary, last = divergence(stops, watch, trainer.state.iteration, lambda: "checkpoint_8.pt")
    assert what.startswith("The loss became NaN or infinite at iteration 5 and training went on to iteration 8 "
                           "(--terminate-on-nan is off)")
    assert "stopped training" not in what and "TerminateOnNan" not in what and "Pass --terminate-on-nan" in what
    assert summary["stopped_at_iteration"] == 8 and summary["nan_at_iteration"] == 5
    assert last == "checkpoint_4.pt"  # the last one before the NaN, not the newest


def test_a_users_terminate_is_recorded_under_the_function_that_called_it():
    trainer, stops = trainer_with()

    def stop_here(engine):
        engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=6), stop_here)
    trainer.run(range(EPOCH_LENGTH), max_epochs=3)
    name = "test_stopping.py:test_a_users_terminate_is_recorded_under_the_function_that_called_it.<locals>.stop_here"
    assert trainer.state.iteration == 6
    assert (stops.reason.summary, stops.reason.iteration) == (f"trainer.terminate() by {name}", 6)
    assert stops.reason.message == f"stopped by a handler: {name} called trainer.terminate()"
