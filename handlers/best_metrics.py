"""The best value of each validation metric so far, logged as `validation/best_<name>` (and `validation/best_epoch`).

W&B sweeps rank runs by the run summary, which holds the last value logged; a run whose last epoch was worse than
an earlier one would rank by the worse one. Logging the running best (into the history, so W&B's hyperband can read
it per epoch, and so into the summary) makes a sweep rank trials by their best epoch.

    best = BestMetrics(trainer, log)                       # log(values, step) writes to W&B
    evaluator.add_event_handler(Events.COMPLETED, best)

Its state is checkpointed (state_dict / load_state_dict), so a resumed run keeps the best of its earlier epochs.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from ignite.engine import Engine

# metrics where lower is better; every other metric is better when higher
LOWER_IS_BETTER = ("loss",)
PREFIX = "validation/best_"


def is_better(name: str, new: float, old: float) -> bool:
    return new < old if name in LOWER_IS_BETTER else new > old


class BestMetrics:
    """Called on the evaluator's COMPLETED: update the best of every metric, then log them on the trainer's step."""

    def __init__(self, trainer: Engine, log: Callable[[dict[str, float], int], None]) -> None:
        self.trainer = trainer
        self.log = log
        self.best: dict[str, float] = {}
        self.best_epoch = 0

    def __call__(self, evaluator: Engine) -> None:
        metrics: Mapping[str, Any] = evaluator.state.metrics
        for name, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                continue
            if name not in self.best or is_better(name, value, self.best[name]):
                self.best[name] = value
                if name == "accuracy" or "accuracy" not in metrics:
                    self.best_epoch = self.trainer.state.epoch
        self.log(self.values(), self.trainer.state.iteration)

    def values(self) -> dict[str, float]:
        """`validation/best_<metric>` for each metric, and `validation/best_epoch` (the epoch of the best accuracy)."""
        return {**{PREFIX + k: v for k, v in self.best.items()}, "validation/best_epoch": self.best_epoch}

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = {k: float(v) for k, v in state["best"].items()}
        self.best_epoch = int(state["best_epoch"])
