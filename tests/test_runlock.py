"""RunLock on a run directory that is removed while a --wait-for-lock process waits for its holder."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ignite_app.runlock import LOCK_FILE, RunLock

HOLD = "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(60)"


def test_run_dir_removed_while_waiting(tmp_path: Path, capsys) -> None:
    """filelock's next poll raised FileNotFoundError out of the wait (a traceback, exit 1); now the wait ends and the
    caller is told to decide again (True), holding nothing, so that the decision sees the run gone."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        remover = threading.Timer(0.5, shutil.rmtree, args=(run_dir,))
        remover.start()
        lock = RunLock(wait=True)
        assert lock.acquire(run_dir) is True
        remover.join()
        assert not lock.held and not run_dir.exists()
        assert "removed while waiting" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()

