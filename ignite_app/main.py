"""`python scripts/train.py --flags` (or the `ignite-app-train` console script): parse, build, run.

Exit codes: 0 on success, 2 on bad input (argparse's convention), 1 on an unexpected failure.
"""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, Optional, Sequence

from ignite_app import collection, tracking
from ignite_app.cli import parse
from ignite_app.errors import EXIT_FAILURE, EXIT_OK, EXIT_USER_ERROR, AppError

if TYPE_CHECKING:
    from ignite_app.resume import ResolvedCheckpoint


def guarded(prog: str, body: Callable[[], None]) -> int:
    """Run a script body with the project's exit codes: 0 ok, 2 bad input (one paragraph), 1 anything else."""
    try:
        body()
        return EXIT_OK
    except AppError as error:
        label = "error: " if error.exit_code == EXIT_USER_ERROR else ""
        if _speaks(error):
            print(f"{prog}: {label}{error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - the last line of defence: show the traceback, exit 1
        traceback.print_exc()
        return EXIT_FAILURE


def _speaks(error: AppError) -> bool:
    """Rank 0 reports the errors that all ranks raise alike (bad input, a stop they made together); a rank that lost
    its peers says so itself. RANK is the launcher's (torchrun, idist's spawn), read from the environment because the
    process group is gone by the time an error reaches here."""
    if getattr(error, "reported", False):  # a spawned process already said it (distributed.WorkerFailed)
        return False
    return os.environ.get("RANK", "0") == "0" or type(error).__name__ == "PeerLost"


def main(argv: Optional[Sequence[str]] = None, ends_process: bool = False) -> int:
    """`ends_process`: the process exits after the run (the scripts), see `collection`."""
    return guarded("train.py", lambda: train(argv, ends_process))


def train(argv: Optional[Sequence[str]] = None, ends_process: bool = False) -> None:
    """Parse, then run `worker` in this process, in each process a launcher started, or in spawned processes; with
    the garbage collector paused until training starts (`collection`; `App.run` resumes it)."""
    collection.pause(freeze_on_resume=ends_process)
    try:
        _train(argv)
    finally:
        collection.resume()


def _train(argv: Optional[Sequence[str]]) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse(argv)
    if config.nproc_per_node == 1 and os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0":
        # this process will start the W&B run (rank 0 alone talks to W&B; spawned workers start their own)
        tracking.prestart(tracking.resolve_mode(config.wandb_mode))
    # heavy imports only after argument parsing, so that --help stays fast
    from ignite_app import distributed

    # the workers get the command line (and so the resume SPEC), never loaded tensors: spawned processes pickle it
    distributed.launch(config, worker, argv)


def worker(local_rank: int, argv: list[str]) -> None:
    """One training process: rank 0 takes the run's lock and decides what to resume (loading it once, which also
    checks it is intact) and tells the other ranks where it is; they load it themselves. Then every rank builds and
    runs."""
    from ignite_app import distributed, resume
    from ignite_app.app import training
    from ignite_app.preemption import STARTING, Preemption
    from ignite_app.runlock import RunLock

    config = parse(argv)
    chosen: list = []  # rank 0's loaded checkpoint: not loaded twice
    run_lock = RunLock(wait=config.wait_for_lock, while_waiting=distributed.keepalive)  # ranks > 0 wait meanwhile

    def decide() -> Optional[tuple[str, str]]:
        chosen.append(_decide_under_lock(config, run_lock))
        return (str(chosen[0].path), chosen[0].origin) if chosen[0] is not None else None

    with Preemption(doing=STARTING):  # a signal while waiting for the lock or loading: one line, exit 128 + signal
        found = distributed.decided_by_rank_zero(decide)
    checkpoint = chosen[0] if chosen else (resume.load_checkpoint(Path(found[0]), found[1]) if found else None)
    if checkpoint is not None:
        # the checkpoint's config, with what this command line states explicitly on top
        config = parse(argv, base=checkpoint.meta["config"])
    training(local_rank, config, checkpoint, run_lock=run_lock)


def _decide_under_lock(config, run_lock) -> "Optional[ResolvedCheckpoint]":
    """What to resume, decided while this process holds the lock of the run it continues: a process that waited for
    the lock (--wait-for-lock) would otherwise resume the checkpoint that was newest when it started, not the one the
    holder wrote last (and log to W&B at steps the holder already logged). The decision is made again after a wait,
    and whenever the checkpoints it read changed before the lock was taken (a holder that finished just then)."""
    from ignite_app import resume
    from ignite_app.app import check_output_dir, run_location

    scanned = _scanned_directory(config)
    while True:
        before = resume.checkpoint_files(scanned) if scanned is not None and scanned.is_dir() else None
        checkpoint = _checkpoint_to_resume(config)
        _, run_dir = run_location(config, checkpoint)
        if not run_dir.is_dir():  # a new run: its directory (and lock) is made by build()
            run_lock.release()
            return checkpoint
        check_output_dir(run_dir)  # the lock file is written there
        waited = run_lock.acquire(run_dir)
        if waited and run_lock.held:
            print(f"--wait-for-lock: the run {run_dir.name} is free; deciding again what to resume.", flush=True)
        elif before is None or resume.checkpoint_files(scanned) == before:
            return checkpoint


def _scanned_directory(config) -> Optional[Path]:
    """The directory whose checkpoints the decision reads (--auto-resume, or --resume DIR), else None."""
    from ignite_app import tracking

    if config.resume:
        path = Path(config.resume).expanduser()
        return path if path.is_dir() else None
    if config.auto_resume:
        run_id = tracking.given_run_id(flag=config.run_id)
        return Path(config.output_dir) / run_id if run_id else Path(config.output_dir)
    return None


def _checkpoint_to_resume(config) -> "Optional[ResolvedCheckpoint]":
    """The loaded checkpoint that --resume / --auto-resume names, or None: rank 0's decision."""
    from ignite_app import resume, tracking

    if config.resume:
        return resume.read(config.resume)
    if config.auto_resume:
        # this experiment's newest intact checkpoint (of the run --run-id / a sweep agent names, if one is named)
        found = resume.find_auto_resume(config.output_dir, tracking.given_run_id(flag=config.run_id), config.to_dict())
        if found is None:
            print(f"--auto-resume: no checkpoint of this experiment under {config.output_dir}; starting a new run.", flush=True)
        return found
    return None


def main_exit() -> None:
    """Console-script entry point (and `scripts/train.py`'s)."""
    exit_process(main(ends_process=True))


def exit_process(code: int) -> NoReturn:
    """End a script's process with `code`, without Python's 2-3 s shutdown collection (`collection.before_exit`);
    atexit handlers and W&B's teardown run as usual."""
    collection.before_exit()
    sys.exit(code)


if __name__ == "__main__":
    main_exit()
