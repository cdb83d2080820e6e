"""W&B's own disk full or unwritable (WANDB_DIR, its staging area): that costs W&B's records of the run, never the run.

    with wandb_writes():                  # around any W&B call that writes files: media, tables, artifacts, finish
        run.log({"test/per_class": table})

The first such failure prints one warning line; later ones are silent, so a run whose W&B disk filled up finishes
with its checkpoints, printed results and exit code 0 instead of thousands of lines of tracebacks. What W&B does
itself (measured with wandb 0.31 on a full tmpfs): wandb-core keeps running when its writes fail with ENOSPC, logs
"failed to save record" to its debug-internal.log and drops the records, and `run.log` of scalars never raises; the
Python side raises OSError when it copies media (tables, images, plots) into the run directory and from
`run.finish` (closing its debug.log), as does the ONNX handler's copy of model.onnx into the run directory. Since the core's losses are silent, the free
space and writability of the run directory are also checked when the run starts and ends (`check_space`).
"""
from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ignite.handlers.wandb_logger import WandBLogger

from ignite_app.disk import describe, disk_error

# less free space than this where W&B writes: its records are being (or about to be) dropped
MIN_FREE_BYTES = 1 << 20
_warned = False


def reset() -> None:
    """A new W&B run: its own one warning."""
    global _warned
    _warned = False


def warn(reason: str, where: Optional[str] = None,
         consequence: str = "W&B's records of this run are incomplete from here on (no further warnings)") -> None:
    """The one warning of this run (later calls print nothing)."""
    global _warned
    if _warned:
        return
    _warned = True
    where = where or _current_run_directory() or os.environ.get("WANDB_DIR") or os.getcwd()
    print(f"Warning: W&B cannot write its files under {where} ({reason}): {consequence}; training, checkpoints and "
          "the results in the output directory go on.", file=sys.stderr, flush=True)


@contextmanager
def wandb_writes() -> Iterator[None]:
    """Around a W&B call that writes files: a full or unwritable disk warns once and skips the call's records."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only a disk error is swallowed; anything else goes on as it was
        error = disk_error(exc)
        if error is None:
            raise
        warn(describe(error))


def _current_run_directory() -> Optional[str]:
    """The active W&B run's directory (wandb/offline-run-...), if a run is active."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None)
    return str(Path(run.dir).parent) if run is not None and getattr(run, "dir", None) else None


def run_directory(logger: Any) -> Optional[Path]:
    run = getattr(logger, "run", None)
    if run is None or getattr(run, "disabled", False):
        return None
    return Path(run.dir).parent


def check_space(logger: Any) -> None:
    """Warn (once) when the run directory is not writable or nearly full: wandb-core drops records silently then."""
    directory = run_directory(logger)
    if directory is None or not directory.is_dir():
        return
    if not os.access(directory, os.W_OK | os.X_OK):
        warn("not writable", str(directory))
        return
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_BYTES:
        warn(f"{free // 1024} KiB free", str(directory))


class GuardedWandBLogger(WandBLogger):
    """Ignite's WandBLogger whose `log` (what every Ignite output handler and `app.wandb_logger.log` call) and
    `close` survive a full WANDB_DIR (`wandb_writes`)."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        with wandb_writes():
            self._wandb.log(*args, **kwargs)

    def close(self) -> None:
        check_space(self)
        with wandb_writes():
            super().close()
