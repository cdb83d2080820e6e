"""RunLock on a run directory that is removed while a --wait-for-lock process waits for its holder."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

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



RANKS = r"""
import datetime, os, sys
from pathlib import Path
import torch.distributed as dist
import torch.multiprocessing as mp

def rank(r, lock_dir, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    # 8 s instead of the default 30 minutes, rank 0 waits longer than that (2 s was flaky on a loaded CI machine)
    dist.init_process_group("gloo", rank=r, world_size=2, timeout=datetime.timedelta(seconds=8))
    from ignite_app import distributed, runlock
    runlock.WAIT_POLL_S = 1.0
    lock = runlock.RunLock(wait=True, while_waiting=distributed.keepalive)
    got = distributed.decided_by_rank_zero(lambda: (lock.acquire(Path(lock_dir)), "decided")[1])
    print(f"rank {r}: {got}", flush=True)
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(rank, args=(sys.argv[1], sys.argv[2]), nprocs=2)
"""


@pytest.mark.e2e
def test_other_ranks_outlast_their_timeout_while_rank_zero_waits(tmp_path: Path) -> None:
    """--wait-for-lock with several processes: ranks > 0 wait for rank 0's decision in a collective, which the process
    group's timeout (30 minutes) ended with an error while the holder trained on; rank 0's keepalive now restarts it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    ranks = None
    try:
        assert holder.stdout.readline().strip() == "held"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        ranks = subprocess.Popen([sys.executable, str(script), str(run_dir), port], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[1])
        out = [ranks.stdout.readline()]
        while out[-1] and "Waiting for" not in out[-1]:
            out.append(ranks.stdout.readline())
        time.sleep(12)  # rank 0 waits for 12 s, rank 1 in a collective that times out after 8 s
        holder.kill()
        rest, _ = ranks.communicate(timeout=120)
        out = "".join(out) + rest
        assert ranks.returncode == 0, out[-2000:]
        assert "rank 0: decided" in out and "rank 1: decided" in out
    finally:
        for process in (holder, ranks):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
