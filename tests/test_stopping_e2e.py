"""Why training stopped is recorded by what stopped it (ignite_app/stopping.py), shown on the console and kept in
the W&B summary (`stopped`, `stopped_at_iteration`); and the App's Python API used in-process."""
import re

import pytest
from ignite.engine import Events

from helpers import QUICK, ROOT, inspect_summary, offline_runs, run_train
from ignite_app import attach_handlers, build
from ignite_app.app import TrainingDiverged
from ignite_app.config import Config

pytestmark = pytest.mark.e2e
USER = str(ROOT / "tests" / "user_handlers.py")
FAST = [*QUICK, "--epochs", "1", "--no-onnx", "--no-test-report"]


def test_a_users_terminate_is_recorded_under_the_handlers_name(tmp_path):
    proc = run_train([*FAST, "--handler", f"{USER}:terminate_at", "--handler-arg", "iteration=4"], tmp_path)
    name = "user_handlers.py:terminate_at.<locals>._stop_here"
    assert f"Training stopped at iteration 4: stopped by a handler: {name} called trainer.terminate()." in proc.stdout
    summary = inspect_summary(offline_runs(tmp_path)[0])["summary"]
    assert summary["stopped"] == f"trainer.terminate() by {name}" and summary["stopped_at_iteration"] == 4
    assert "test/accuracy" in summary  # a handler's stop is an ordinary end: the test set is evaluated


def test_nan_without_terminate_on_nan_says_the_loss_became_nan_and_suggests_the_flag(tmp_path):
    proc = run_train([*FAST, "--no-terminate-on-nan", "--checkpoint-every", "2", "--handler", f"{USER}:blow_up_at",
                      "--handler-arg", "iteration=3"], tmp_path, check=False)
    err = proc.stderr
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "The loss became NaN or infinite at iteration" in err and "training went on to iteration 11" in err
    assert "(--terminate-on-nan is off)" in err and "Pass --terminate-on-nan" in err and "TerminateOnNan" not in err
    first_nan = int(re.search(r"NaN or infinite at iteration (\d+)", err).group(1))
    good = int(re.search(r"the last good checkpoint is \S+/checkpoint_(\d+)\.pt", err).group(1))
    assert 3 <= good < first_nan  # the last one written before the loss went NaN, not the newest (NaN) one
    summary = inspect_summary(offline_runs(tmp_path)[0])["summary"]
    assert summary["stopped"].startswith("loss became NaN or infinite (--no-terminate-on-nan")
    assert summary["stopped_at_iteration"] == 11 and summary["nan_at_iteration"] == first_nan


def in_process_config(tmp_path, **changes) -> Config:
    settings = dict(dataset="digits", epochs=1, batch_size=256, output_dir=str(tmp_path / "runs"),
                    wandb_mode="disabled", progress_bar=False, onnx=False, test_report=False)
    return Config(**{**settings, **changes})


def test_run_attaches_the_handlers_itself_and_a_second_attach_adds_none(tmp_path):
    app = build(in_process_config(tmp_path))
    try:
        metrics = app.run()  # no attach_handlers(app) before
        handlers = {event: len(app.trainer._event_handlers[event]) for event in list(app.trainer._event_handlers)}
        assert app.attached and attach_handlers(app) is app
        assert {event: len(app.trainer._event_handlers[event]) for event in handlers} == handlers
        assert metrics["test/accuracy"] > 0.3 and app.trainer.state.epoch == 1
        assert list((app.output_dir / "checkpoints").glob("checkpoint_*.pt"))  # the checkpointers were attached
        assert app.stops.reason is None  # it ran to its last epoch: nothing stopped it
    finally:
        app.close()


def test_early_stopping_and_a_requested_stop_are_recorded_in_process(tmp_path):
    app = build(in_process_config(tmp_path, epochs=4, early_stopping=1, lr=1e-12))
    try:
        app.run()
        reason = app.stops.reason
        assert reason.summary == "early stopping" and app.trainer.state.epoch == 2 and reason.iteration == 12
        assert reason.message == "Early stopping after epoch 2: validation accuracy did not improve for 1 epoch(s)"
    finally:
        app.close()
    app = attach_handlers(build(in_process_config(tmp_path)))
    app.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda _: app.request_stop("enough data seen"))
    try:
        app.run()
        # asked during iteration 2, after the stop check: every rank stops together at the end of the next one
        assert (app.stops.reason.summary, app.stops.reason.iteration) == ("enough data seen", 3)
    finally:
        app.close()


def test_nan_with_terminate_on_nan_blames_the_flag_that_stopped_it(tmp_path):
    app = attach_handlers(build(in_process_config(tmp_path)))

    @app.trainer.on(Events.ITERATION_COMPLETED(once=2))
    def _blow_up(_):
        for group in app.optimizer.param_groups:
            group["lr"] = 1e12

    try:
        with pytest.raises(TrainingDiverged, match=r"the loss became NaN or infinite at iteration \d "
                                                   r"\(--terminate-on-nan stopped training\)"):
            app.run()
        assert app.stops.reason.summary == "loss became NaN or infinite"
    finally:
        app.close()
