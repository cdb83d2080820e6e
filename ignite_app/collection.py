"""Python's garbage collector, paused while a training process starts.

The imports of torch, Ignite, W&B and ONNX leave ~600,000 tracked objects. While they load, the collector ran ~6
full collections over the growing heap (0.5-0.6 s before the first iteration of a Fashion-MNIST run, counted with
gc.callbacks); when a process ends, its shutdown collection over them took 2-3 s after the last line (py-spy:
gc_collect_main). So: no collections during start-up; when training starts, one collection of the start-up's
garbage (freezing without it kept ~150 MB of dead dataset-loading objects for the whole run), then a process that
will exit afterwards freezes what is left (later collections skip frozen objects, the shutdown one included), and
collection resumes.
"""
from __future__ import annotations

import gc

_state = {"paused": False, "freeze": False, "enabled": True}


def pause(freeze_on_resume: bool) -> None:
    """Stop collecting until `resume` (the start of training). `freeze_on_resume` only for a process that exits
    after the run: frozen objects that later become garbage are never collected."""
    _state.update(paused=True, freeze=freeze_on_resume, enabled=gc.isenabled())
    gc.disable()


def resume() -> None:
    """Collect again, as before `pause` (idempotent; a caller that had the collector off keeps it off); freeze the
    start-up's objects first when `pause` asked for it."""
    if not _state["paused"]:
        return
    _state["paused"] = False
    if _state["enabled"]:
        if _state["freeze"]:  # the collection only where a freeze follows: in-process callers pay none
            gc.collect()
            gc.freeze()
        gc.enable()


def before_exit() -> None:
    """The process is about to exit: collect the run's own garbage (closing what it left open), then freeze the
    heap so that the shutdown collection skips it."""
    gc.collect()
    gc.freeze()
