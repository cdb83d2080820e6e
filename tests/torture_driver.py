"""Kill a training run at random instants, again and again, then let it finish: `test_torture_*` runs this.

    python tests/torture_driver.py OUTPUT_DIR KILLS LAST_ITERATION [SEED] -- TRAIN FLAGS...

Each attempt is `train.py FLAGS --auto-resume` in a child forked from this process, which has imported torch, Ignite
and W&B once: a start costs well under a second instead of ~5 s, so many kills fit in a short test. The child runs
exactly what `scripts/train.py` runs (`ignite_app.main.main`).

The kills come in three kinds, so that every stretch of a run's life gets hit, not only the instants after a save:
- `start`, in turn: a random delay after the fork within the first or the second half of the time the last attempt
  took to its first new checkpoint (parsing, the resume decision and lock, the data, the model, W&B's start), or
  0-60 ms after the run printed what it is (the debris cleanup, the restore, the first iteration);
- `checkpoint`: 0-60 ms after the attempt wrote a new checkpoint: mid-iteration, mid-torch.save, mid-prune,
  mid-artifact staging (each such kill also guarantees progress);
- `end`: once training is complete (the last checkpoint is on disk): the test evaluation, the last artifact versions,
  W&B's close. An attempt that finishes first is not a kill: the next one (which only evaluates,
  the run being complete) is killed within the time that end took.
Prints one JSON line: the seed (random unless given), and each kill's kind, delay and phase, the phase named by what
that attempt printed and which checkpoints it wrote.
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

MAX_CHECKPOINT_DELAY = 0.06  # within two iterations of the fresh checkpoint, so the kills fit in 33 iterations
END_KILLS = 2
ATTEMPT_TIMEOUT = 120

def start(argv: list[str], log_path: str) -> int:
    pid = os.fork()
    if pid == 0:  # the child: train, with its output in the log; never return into the parent's code
        code = 1
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            for stream in (sys.stdout, sys.stderr):  # a kill must not take printed lines with it: they name its phase
                stream.reconfigure(line_buffering=True)
            code = main(argv)
        finally:
            sys.stdout.flush()
            os._exit(code)
    return pid


def wait(pid: int, seconds: float, until=lambda: False):
    """The child's exit status if it ends within `seconds` (or before `until()` holds), else None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    return None


def checkpoint_writes(output_dir: str) -> dict[int, int]:
    """iteration -> mtime_ns of the latest-checkpoint files now on disk (a file pruned meanwhile is left out)."""
    found = {}
    for path in glob.glob(os.path.join(output_dir, "*", "checkpoints", "checkpoint_*.pt")):
        try:
            found[int(os.path.basename(path)[len("checkpoint_"):-len(".pt")])] = os.stat(path).st_mtime_ns
        except (OSError, ValueError):
            pass
    return found


def newest_write(output_dir: str) -> int:
    return max(checkpoint_writes(output_dir).values(), default=0)


def phase(output: str, wrote: set[int], last_iteration: int) -> str:
    """The phase an attempt was killed in, by what it printed and which checkpoints it wrote."""
    if "Test results" in output:
        return "end: after the test evaluation (last artifact versions, W&B's close)"
    if "nothing to train" in output:
        return "end: a complete run's test evaluation"
    if last_iteration in wrote:
        return "end: training complete, test evaluation"
    if wrote:
        return f"training: after checkpoint_{max(wrote)}"
    if "Removed" in output and "leftover" in output:
        return "start-up: debris cleaned; restore, first iteration"
    if "Resumed from" in output:
        return "start-up: restored; first iteration"
    if "W&B" in output:
        return "start-up: W&B started; debris cleanup, restore"
    if output.strip():
        return "start-up: printing what the run is"
    return "start-up: nothing printed yet (resume decision, lock, data, model, W&B's start)"


def plan(kills: int, rng: random.Random) -> list[str]:
    """The first kill after a checkpoint (it measures how long a start takes), the end kills last (a run whose
    training is complete makes no more checkpoints), start and checkpoint kills shuffled between them."""
    middle = kills - 1 - END_KILLS
    kinds = ["start"] * (middle // 2) + ["checkpoint"] * (middle - middle // 2)
    rng.shuffle(kinds)
    return ["checkpoint", *kinds, *["end"] * END_KILLS]


def torture(argv: list[str], output_dir: str, kills: int, last_iteration: int, seed: int) -> dict:
    rng = random.Random(seed)
    log = output_dir.rstrip("/") + ".log"
    command = [*argv, "--auto-resume", "--output-dir", output_dir]
    report: dict = {"seed": seed, "kills": 0, "rounds": []}
    to_first_save = 2.0  # measured by each checkpoint kill: fork -> first new checkpoint
    end_took = 0.4  # measured by an attempt that finished before its end kill: last checkpoint (or restore) -> exit
    began = time.monotonic()

    def finish(**extra) -> dict:
        report.update(extra, seconds=round(time.monotonic() - began, 1))
        return report

    def printed_since(offset: int) -> str:
        with open(log, errors="replace") as f:
            f.seek(offset)
            return f.read()

    starts = 0
    for kind in plan(kills, rng):
        while True:
            offset = os.path.getsize(log) if os.path.exists(log) else 0
            writes = checkpoint_writes(output_dir)
            before = max(writes.values(), default=0)
            complete = last_iteration in checkpoint_writes(output_dir)
            kind = "end" if complete else kind  # a complete run makes no more checkpoints: only its end is left
            forked = time.monotonic()
            pid = start(command, log)
            if kind == "start":  # in turn: the first or second half of the start-up, or just after it
                stratum, starts = starts % 3, starts + 1
                if stratum < 2:
                    delay = to_first_save * rng.uniform(stratum / 2, (stratum + 1) / 2)
                    code = wait(pid, delay)
                else:  # once the run has said what it is (W&B has started): debris cleanup, restore
                    code = wait(pid, ATTEMPT_TIMEOUT, until=lambda: "W&B" in printed_since(offset))
                    delay = rng.uniform(0.0, MAX_CHECKPOINT_DELAY)
                    code = code if code is not None else wait(pid, delay)
            elif kind == "checkpoint":
                code = wait(pid, ATTEMPT_TIMEOUT, until=lambda: newest_write(output_dir) > before)
                if code is None:
                    to_first_save = time.monotonic() - forked
                    delay = rng.uniform(0.0, MAX_CHECKPOINT_DELAY)
                    code = wait(pid, delay)
            else:  # end: from the last checkpoint's write (or, on a complete run, from its restore)
                if not complete:
                    code = wait(pid, ATTEMPT_TIMEOUT,
                                until=lambda: checkpoint_writes(output_dir).get(last_iteration, 0) > before)
                else:
                    code = wait(pid, ATTEMPT_TIMEOUT, until=lambda: "Resumed from" in printed_since(offset))
                if code is not None:
                    return finish(finished_early=f"exit {code} before its training was complete")
                reached = time.monotonic()
                delay = rng.uniform(0.0, end_took)
                code = wait(pid, delay)
                if code is not None:  # finished first: measure how long its end took, and kill the next attempt
                    end_took = time.monotonic() - reached
                    report["rounds"].append({"kind": kind, "finished_before_the_kill": code})
                    if len(report["rounds"]) > 4 * kills:
                        return finish(finished_early="too many attempts ended before their kill")
                    continue
            if code is not None:
                return finish(finished_early=f"a {kind} kill's attempt ended first (exit {code})")
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            wrote = {i for i, written in checkpoint_writes(output_dir).items() if written > writes.get(i, 0)}
            report["kills"] += 1
            report["rounds"].append({"kind": kind, "delay_s": round(delay, 3),
                                     "phase": phase(printed_since(offset), wrote, last_iteration)})
            break
    pid = start(command, log)
    return finish(exit_code=wait(pid, 600))


if __name__ == "__main__":
    args = sys.argv[1:]
    split = args.index("--")
    out, kills, last, *seed = args[:split]
    seed_value = int(seed[0]) if seed else random.SystemRandom().randrange(2**32)
    print(f"torture seed {seed_value} (rerun with it: {out} {kills} {last} {seed_value})", file=sys.stderr, flush=True)
    print(json.dumps(torture(args[split + 1:], out, int(kills), int(last), seed_value)), flush=True)
