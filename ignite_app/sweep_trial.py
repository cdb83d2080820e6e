"""Inside a trial process: report to the Optuna study, prune, and record the trial in the run's W&B summary.

`scripts/sweep.py` starts each trial as `scripts/train.py FLAGS --handler 'ignite_app.sweep_trial:attach {...}'`;
this is that handler. It attaches, on the evaluator, optuna_integration's `PyTorchIgnitePruningHandler` (which reports
the validation metric each epoch and raises TrialPruned when the pruner says so); a pruned trial stops its trainer
the way Ignite's own EarlyStopping does (`trainer.terminate()`), so the run still ends cleanly: test set evaluated,
W&B run finished, `sweep/state: pruned` in its summary. The result (the metrics the sweep can rank by) goes to a
JSON file the sweep process reads; the sweep process alone tells the study the trial's final state.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from ignite.engine import Engine, Events

from ignite_app import tracking


class PruneOnValidation:
    """optuna_integration's pruning handler, with a pruned trial ending its run cleanly instead of by exception."""

    def __init__(self, trial: Any, metric: str, trainer: Engine, on_pruned: Any) -> None:
        from optuna_integration import PyTorchIgnitePruningHandler

        self.handler = PyTorchIgnitePruningHandler(trial, metric, trainer)
        self.trainer, self.on_pruned = trainer, on_pruned

    def __call__(self, evaluator: Engine) -> None:
        import optuna

        try:
            self.handler(evaluator)
        except optuna.TrialPruned:
            self.on_pruned(self.trainer.state.epoch)
            self.trainer.terminate()


class TrialRecorder:
    """The trial's number and state in the W&B summary, and its result file for the sweep process."""

    def __init__(self, app: Any, study: str, number: int, result: Path) -> None:
        self.app, self.result = app, result
        self.pruned_at: Optional[int] = None
        self.summary({"sweep/name": study, "sweep/trial": number, "sweep/state": "running"})

    def summary(self, values: dict[str, Any]) -> None:
        tracking.log_summary(self.app.wandb_logger, values)

    def pruned(self, epoch: int) -> None:
        self.pruned_at = epoch
        self.app.stops.record("pruned by Optuna", f"Optuna pruned this trial after epoch {epoch}: its validation "
                              "metric is behind the others'", self.app.trainer)  # App.run prints it
        self.summary({"sweep/state": "pruned", "sweep/pruned_at_epoch": epoch})

    def failed(self, trainer: Engine, error: BaseException) -> None:
        """EXCEPTION_RAISED: record, then let the exception end the run as it would without us."""
        self.summary({"sweep/state": "failed", "sweep/error": f"{type(error).__name__}: {error}"[:500]})
        raise error

    def completed(self, trainer: Engine) -> None:
        if not math.isfinite(trainer.state.output if trainer.state.output is not None else 0.0):
            self.summary({"sweep/state": "failed", "sweep/error": "the loss became NaN or infinite"})

    def tested(self, test_evaluator: Engine) -> None:
        """After the test set: every metric the sweep can rank by, as the run's summary will hold them."""
        app = self.app
        values = {f"validation/{k}": float(v) for k, v in app.evaluator.state.metrics.items()}
        values.update(app.to_save["best_metrics"].values())
        values.update({f"test/{k}": float(v) for k, v in test_evaluator.state.metrics.items()})
        if app.trainer.state.output is not None:
            values["training/loss"] = float(app.trainer.state.output)
        state = "pruned" if self.pruned_at is not None else "complete"
        if state == "complete":
            self.summary({"sweep/state": "complete"})
        payload = {"state": state, "epoch": self.pruned_at or app.trainer.state.epoch, "values": values,
                   "run_id": app.run_id, "run_dir": str(app.output_dir),
                   "wandb_dir": tracking.offline_run_dir(app.wandb_logger)}
        tmp = self.result.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, self.result)  # the sweep process never reads half a file


def attach(app: Any, storage: str, study: str, trial_id: int, number: int, metric: str, result: str,
           early_terminate: Optional[dict[str, Any]] = None, max_epochs: int = 1) -> None:
    """The `--handler` the sweep process passes to each trial (its arguments come as JSON)."""
    import ignite.distributed as idist

    if idist.get_rank() != 0:  # rank 0 reports for the whole run
        return
    recorder = TrialRecorder(app, study, number, Path(result))
    app.trainer.add_event_handler(Events.EXCEPTION_RAISED, recorder.failed)
    app.trainer.add_event_handler(Events.COMPLETED, recorder.completed)
    app.test_evaluator.add_event_handler(Events.COMPLETED, recorder.tested)
    if early_terminate and idist.get_world_size() == 1:
        # a pruning decision taken on rank 0 alone would leave the other ranks waiting: no pruning under torchrun
        _attach_pruning(app, storage, study, trial_id, metric, early_terminate, max_epochs, recorder)


def _attach_pruning(app: Any, storage: str, study: str, trial_id: int, metric: str,
                    early_terminate: dict[str, Any], max_epochs: int, recorder: TrialRecorder) -> None:
    import optuna

    from ignite_app.sweep_optuna import make_pruner, open_storage

    loaded = optuna.load_study(study_name=study, storage=open_storage(storage),
                               sampler=optuna.samplers.RandomSampler(),  # never samples here; cheap to build
                               pruner=make_pruner(early_terminate, max_epochs))
    trial = optuna.trial.Trial(loaded, trial_id)  # the trial the sweep process asked for, by its storage id
    watched = metric.split("/")[-1].removeprefix("best_")  # validation/best_accuracy -> the evaluator's accuracy
    app.evaluator.add_event_handler(Events.COMPLETED, PruneOnValidation(trial, watched, app.trainer, recorder.pruned))
