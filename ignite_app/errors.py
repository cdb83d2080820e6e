"""The project's errors: each kind carries the exit code the scripts end with, and prints as one paragraph.

    AppError            base class; `exit_code` is what `main.guarded` returns, with no traceback
    ├── UserError       bad input (a flag, a file, a checkpoint, the environment): exit 2, nothing written
    └── TrainingStopped training ended early for a reason the run explains (NaN loss, a full disk, ...): exit 1
"""
from __future__ import annotations

import logging
import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USER_ERROR = 2


class AppError(Exception):
    """An error the scripts report as one paragraph (no traceback) and turn into `exit_code`."""

    exit_code = EXIT_FAILURE


class UserError(AppError):
    """Bad input: say what was wrong, what was tried and what to do."""

    exit_code = EXIT_USER_ERROR


class TrainingStopped(AppError):
    """Training could not go on (the loss diverged, the checkpoint disk is full, ...); the message says where the
    last good checkpoint is."""

    exit_code = EXIT_FAILURE


class _AppErrorsSpeakOnce(logging.Filter):
    """Drops Ignite's 'Engine run is terminating due to exception: ...' line while an AppError is in flight: the
    error reaches `main.guarded`, which prints it as its one paragraph (Ignite logs it from inside its except block,
    so the exception being handled is the one it reports)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(sys.exc_info()[1], AppError)


def quiet_engine_logs(*engines) -> None:
    """Keep Ignite's engines from printing an AppError a second time (engines of one class share one logger)."""
    for engine in engines:
        if not any(isinstance(f, _AppErrorsSpeakOnce) for f in engine.logger.filters):
            engine.logger.addFilter(_AppErrorsSpeakOnce())
