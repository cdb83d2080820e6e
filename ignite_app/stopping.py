"""Why training ended before its last epoch, recorded by whoever stopped it, never guessed afterwards.

Every stop goes through `trainer.terminate()`. The handlers that stop training for a reason of their own say so as
they do it (`RecordingEarlyStopping`, `RecordingTerminateOnNan`, `distributed.StopTogether` for preemption signals and
`App.request_stop`, a pruned sweep trial); a `terminate()` nobody claimed (a user's handler) is recorded on
Events.TERMINATE under the name of the function that called it. `NanWatch` notes the first non-finite loss when
`--no-terminate-on-nan` lets training run on; `divergence` words a NaN loss at the end from either. `App.run` prints
the reason and writes it to the W&B summary (`stopped`, `stopped_at_iteration`).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping, TerminateOnNan

EARLY_STOPPING = "early stopping"
DIVERGED = "loss became NaN or infinite"


@dataclass(frozen=True)
class StopReason:
    summary: str  # the W&B summary's `stopped` value: short and stable ("early stopping", "preempted (SIGTERM)", ...)
    message: str  # one sentence for the console
    iteration: int


class StopRecorder:
    """Keeps the first reason recorded for stopping the trainer."""

    def __init__(self) -> None:
        self.reason: Optional[StopReason] = None
        self.caller: Optional[str] = None  # the function that last called trainer.terminate()

    def record(self, summary: str, message: str, engine: Engine) -> None:
        if self.reason is None:
            self.reason = StopReason(summary, message, engine.state.iteration)

    def attach(self, trainer: Engine) -> None:
        # Ignite does not say who called terminate(): this trainer's own terminate is wrapped to note the caller
        terminate = trainer.terminate

        def noting_caller(*args: Any, **kwargs: Any) -> None:
            self.caller = caller_name(sys._getframe(1))
            terminate(*args, **kwargs)

        trainer.terminate = noting_caller  # type: ignore[method-assign]
        trainer.add_event_handler(Events.TERMINATE, self._unclaimed)

    def _unclaimed(self, engine: Engine) -> None:
        who = self.caller or "a handler"
        self.record(f"trainer.terminate() by {who}",
                    f"stopped by a handler: {who} called trainer.terminate()", engine)


def caller_name(frame: Any) -> str:
    """`file.py:qualified.name` of the function running in `frame` (`my_handlers.py:stop_at.<locals>._stop`), the
    file as a --handler spec names it (a handler loaded from a file has a generated module name)."""
    code = frame.f_code
    return f"{Path(code.co_filename).name}:{getattr(code, 'co_qualname', code.co_name)}"


class RecordingEarlyStopping(EarlyStopping):
    """Ignite's EarlyStopping (same state_dict) that records why it stopped the trainer."""

    def __init__(self, recorder: StopRecorder, patience: int, score_function: Callable[[Engine], float],
                 trainer: Engine) -> None:
        super().__init__(patience, score_function=score_function, trainer=trainer)
        self.recorder = recorder

    def __call__(self, engine: Engine) -> None:
        super().__call__(engine)
        if self.counter >= self.patience:
            epoch = self.trainer.state.epoch
            self.recorder.record(EARLY_STOPPING, f"Early stopping after epoch {epoch}: validation accuracy did not "
                                 f"improve for {self.patience} epoch(s)", self.trainer)


class RecordingTerminateOnNan(TerminateOnNan):
    """Ignite's TerminateOnNan that records why it stopped the trainer."""

    def __init__(self, recorder: StopRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __call__(self, engine: Engine) -> None:
        super().__call__(engine)
        if engine.should_terminate and self.recorder.reason is None and not is_finite(engine.state.output):
            self.recorder.record(DIVERGED, f"the loss became NaN or infinite at iteration {engine.state.iteration} "
                                 "(--terminate-on-nan stopped training)", engine)


class NanWatch:
    """With --no-terminate-on-nan training runs on after the loss becomes NaN: remember where that happened and which
    checkpoint was the last one written before it, for the message at the end."""

    def __init__(self, last_checkpoint: Callable[[], Optional[str]]) -> None:
        self.last_checkpoint = last_checkpoint
        self.first_iteration: Optional[int] = None
        self.checkpoint_before: Optional[str] = None

    def __call__(self, engine: Engine) -> None:
        if self.first_iteration is None and not is_finite(engine.state.output):
            self.first_iteration = engine.state.iteration
            self.checkpoint_before = self.last_checkpoint()


def divergence(recorder: StopRecorder, nan_watch: Optional[NanWatch], iteration: int,
               latest_checkpoint: Callable[[], Optional[str]]) -> tuple[str, dict[str, Any], Optional[str]]:
    """The loss is NaN or infinite at the end of training: (the sentence that says so, the W&B summary, the last
    good checkpoint). Either TerminateOnNan stopped training and recorded it (the newest checkpoint is the last
    good one), or, with --no-terminate-on-nan, training ran on to `iteration` and `nan_watch` knows where the loss
    went bad and the checkpoint before it: only the first blames --terminate-on-nan."""
    stopped = recorder.reason
    if stopped is not None and stopped.summary == DIVERGED:
        return (f"Training stopped at iteration {iteration}: {stopped.message}",
                {"stopped": DIVERGED, "stopped_at_iteration": iteration}, latest_checkpoint())
    first = nan_watch.first_iteration if nan_watch else None
    what = (f"The loss became NaN or infinite at iteration {first or '?'} and training went on to iteration "
            f"{iteration} (--terminate-on-nan is off): the weights and the checkpoints written since are not usable. "
            "Pass --terminate-on-nan (the default) to stop at the first NaN loss")
    summary = {"stopped": f"{DIVERGED} (--no-terminate-on-nan: trained on to the end)",
               "stopped_at_iteration": iteration, "nan_at_iteration": first}
    return what, summary, nan_watch.checkpoint_before if nan_watch else None


def is_finite(output: Any) -> bool:
    """The trainer's output is the loss as a float (Ignite's supervised trainer calls .item())."""
    return output is None or math.isfinite(float(output))
