"""One process per run: an exclusive lock on OUTPUT_DIR/RUN_ID/.lock while a process trains the run.

filelock takes an flock on the file; the kernel drops it when the process dies, so the lock of a killed process
never blocks. The holder is named from /proc/locks (Linux), which costs no extra file to write or go stale.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from filelock import FileLock, Timeout

from ignite_app.errors import UserError

LOCK_FILE = ".lock"
WAIT_POLL_S = 60.0  # --wait-for-lock: how often the other ranks hear that rank 0 still waits (their timeout: 30 min)


def lock_holder(path: Path) -> Optional[str]:
    """`PID (command line)` of the process holding an flock on `path`, when the kernel tells."""
    try:
        inode = os.stat(path).st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
                pid = parts[4]
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                return f"process {pid} ({command[:200]})"
    except (OSError, ValueError):
        pass
    return None


class RunLock:
    """Held from the first write into the run directory until the process ends (or `release`)."""

    def __init__(self, wait: bool = False, while_waiting: Callable[[], None] = lambda: None) -> None:
        self.wait = wait
        self.while_waiting = while_waiting  # called every WAIT_POLL_S of a wait (distributed.keepalive)
        self._lock: Optional[FileLock] = None
        self.run_dir: Optional[Path] = None  # the run directory whose lock is held

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.is_locked

    def acquire(self, run_dir: Path) -> bool:
        """Take the lock on an existing run directory (a second call for the same directory while held does nothing;
        another directory's lock is let go first). True when it had to wait for another process (--wait-for-lock):
        that process may have written newer checkpoints meanwhile, so what to resume must be decided again. Also True,
        with nothing held, when the directory is removed while waiting: the decision sees it gone."""
        run_dir = Path(run_dir)
        if self.held and self.run_dir is not None and self.run_dir.resolve() == run_dir.resolve():
            return False
        self.release()
        path = run_dir / LOCK_FILE
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
            self._lock, self.run_dir = lock, run_dir
            return False
        except Timeout:
            holder = lock_holder(path) or "another process"
        if not self.wait:
            raise UserError(
                f"The run {run_dir.name} is being trained by {holder}, which holds {path}. Wait for it to finish "
                "(or stop it), or add --wait-for-lock to wait; a lock of a process that died is released by itself."
            )
        print(f"Waiting for {holder} to finish the run {run_dir.name} (--wait-for-lock) ...", flush=True)
        try:
            while True:
                try:
                    lock.acquire(timeout=WAIT_POLL_S)
                    break
                except Timeout:
                    self.while_waiting()
        except FileNotFoundError:  # the run directory was removed while waiting (filelock's next poll cannot open it)
            if run_dir.is_dir():
                raise
            print(f"--wait-for-lock: the run directory {run_dir} was removed while waiting.", flush=True)
            return True
        self._lock, self.run_dir = lock, run_dir
        return True

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock, self.run_dir = None, None
