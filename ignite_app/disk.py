"""Full or unwritable disks: which errors they are, and what a failed checkpoint write tells the user.

    check_room_for_a_checkpoint(run_dir, weights_bytes)   # before anything is written: exit 2 on a full disk
    with checkpoint_write(directory, filename):           # in the checkpoint saver, around the disk write
        torch.save(...)                                    # ENOSPC -> CheckpointWriteFailed: one paragraph, exit 1

A full checkpoint disk used to end a run in a 57-line chained traceback (torch.save reports ENOSPC as a RuntimeError
of its zip writer, raised while handling the OSError). Here it is one message that names the newest complete
checkpoint, and no temporary file of the failed write is left behind.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ignite_app.errors import TrainingStopped, UserError

# what a disk that cannot take more says: full, over quota, read-only, not writable (any more), failing
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


def disk_error(exc: Optional[BaseException]) -> Optional[OSError]:
    """The OSError of a full or unwritable disk behind `exc` (itself, or in its __cause__/__context__ chain), else
    None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe(error: OSError) -> str:
    """'No space left on device' (the OS's words for the errno)."""
    return error.strerror or os.strerror(error.errno or 0) or str(error)


def human_size(n: float) -> str:
    """1234567 -> '1.2 MB'."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_room_for_a_checkpoint(directory: Path, weights_bytes: int) -> None:
    """Refuse to start (exit 2, nothing written) when the disk of `directory` (or of its first existing parent) has
    less free space than one checkpoint needs: at least the model's weights (with the optimizer state it is 2-3
    times that). A full disk found here costs the user nothing; found at the first checkpoint, it costs an epoch."""
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is None:
        return
    free = shutil.disk_usage(existing).free
    if free < weights_bytes:
        raise UserError(f"--output-dir {directory}: its disk has {human_size(free)} free, less than one checkpoint of "
                        f"this model needs (at least {human_size(weights_bytes)}, the model's weights; with the "
                        "optimizer state 2-3 times that). Free space there, or pass another --output-dir.")


class CheckpointWriteFailed(TrainingStopped):
    """A checkpoint could not be written (disk full or unwritable): exit 1 with one paragraph, no traceback."""


@contextmanager
def checkpoint_write(directory: Path, filename: str) -> Iterator[None]:
    """Around one checkpoint write: a disk error becomes `CheckpointWriteFailed`, and the temporary file of the
    failed write is removed (Ignite's DiskSaver removes it when torch.save fails, but not when the final flush at
    close does)."""
    directory = Path(directory)
    before = {p.name for p in directory.glob("tmp*")}
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only a disk error is translated; anything else goes on as it was
        error = disk_error(exc)
        if error is None:
            raise
        for leftover in directory.glob("tmp*"):
            if leftover.name not in before:
                leftover.unlink(missing_ok=True)
        from ignite_app.resume import newest_checkpoint

        newest = newest_checkpoint(directory)  # whole files only: the saver writes atomically
        kept = (f"the newest complete checkpoint is {newest}; free space there (or move the run directory) and rerun "
                "the same command with --auto-resume to continue from it" if newest else
                "no checkpoint of this run was written yet; free space there (or pass another --output-dir) and "
                "start the run again")
        raise CheckpointWriteFailed(
            f"Training stopped: the checkpoint {directory / filename} could not be written ({describe(error)}); "
            f"{kept}.") from None
