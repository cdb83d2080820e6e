"""A disk that fills up mid-run, for the full-disk tests: `fill_disk(directory)`, and the `--handler`
`tests/disk_filler.py:fill_at_epoch --handler-arg path=DIR` that fills it at the end of an epoch (as another process
filling the disk would)."""
import time
from pathlib import Path

from ignite.engine import Events


def fill_disk(directory: Path) -> None:
    """Write zeros into directory/fill until the disk is full (page-sized writes: tmpfs allocates whole pages)."""
    page = bytes(4096)
    with open(Path(directory) / "fill", "wb", buffering=0) as f:
        try:
            while f.write(page):
                pass
        except OSError:
            pass


def fill_at_epoch(app, path: str, epoch: int = 1, delay: float = 0.0) -> None:
    """`delay` seconds first: W&B then has flushed what was logged so far (its transaction log flushes every second)."""
    def fill(_) -> None:
        time.sleep(delay)
        fill_disk(Path(path))

    app.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=epoch), fill)
