"""Kill a training run at random instants, again and again, then let it finish: `test_torture_*` runs this.

    python tests/torture_driver.py OUTPUT_DIR KILLS SEED -- TRAIN FLAGS...

Each attempt is `train.py FLAGS --auto-resume` in a child forked from this process, which has imported torch, Ignite
and W&B once: a start costs well under a second instead of ~5 s, so many kills fit in a short test. The child runs
exactly what `scripts/train.py` runs (`ignite_app.main.main`). Prints one JSON line: the kills and their delays.
"""
import glob
import json
import os
import random
import signal
import sys
import time

import ignite.engine  # noqa: F401 - imported once, before the forks
import torch  # noqa: F401
import wandb  # noqa: F401

from ignite_app.main import main


def start(argv: list[str], log_path: str) -> int:
    pid = os.fork()
    if pid == 0:  # the child: train, with its output in the log; never return into the parent's code
        code = 1
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = main(argv)
        finally:
            sys.stdout.flush()
            os._exit(code)
    return pid


def wait(pid: int, seconds: float, until=lambda: False) -> int | None:
    """The child's exit status if it ends within `seconds` (or before `until()` holds), else None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    return None


def newest_write(output_dir: str) -> int:
    files = glob.glob(os.path.join(output_dir, "*", "checkpoints", "checkpoint_*.pt"))
    return max((os.stat(f).st_mtime_ns for f in files if os.path.exists(f)), default=0)


# a kill within two iterations of a fresh checkpoint: mid-iteration, mid-save, mid-prune or mid-staging, and short
# enough that 8 kills fit in the test run's 33 iterations on a fast machine too
MAX_DELAY = 0.06


def torture(argv: list[str], output_dir: str, kills: int, seed: int) -> dict:
    """Each round: start, wait until the child has written a new checkpoint (so every round makes progress), then
    SIGKILL it after a random 0-60 ms: mid-iteration, mid-torch.save, mid-prune or mid-artifact staging."""
    rng = random.Random(seed)
    log = output_dir.rstrip("/") + ".log"
    delays: list[float] = []
    while len(delays) < kills:
        before = newest_write(output_dir)
        pid = start([*argv, "--auto-resume", "--output-dir", output_dir], log)
        if wait(pid, 120, until=lambda: newest_write(output_dir) > before) is not None:
            return {"kills": len(delays), "delays": delays, "finished_early": True}
        delay = rng.uniform(0.0, MAX_DELAY)
        if wait(pid, delay) is not None:
            return {"kills": len(delays), "delays": delays, "finished_early": True}
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        delays.append(round(delay, 3))
    pid = start([*argv, "--auto-resume", "--output-dir", output_dir], log)
    return {"kills": len(delays), "delays": delays, "exit_code": wait(pid, 600)}


if __name__ == "__main__":
    out, kills, seed, sep, *flags = sys.argv[1:]
    assert sep == "--"
    print(json.dumps(torture(flags, out, int(kills), int(seed))), flush=True)
