"""`python scripts/train.py --flags` (or the `ignite-app-train` console script): parse, build, run.

Exit codes: 0 on success, 2 on bad input (argparse's convention), 1 on an unexpected failure.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Optional, Sequence

from ignite_app import tracking
from ignite_app.cli import parse
from ignite_app.errors import EXIT_FAILURE, EXIT_OK, EXIT_USER_ERROR, AppError


def guarded(prog: str, body: Callable[[], None]) -> int:
    """Run a script body with the project's exit codes: 0 ok, 2 bad input (one paragraph), 1 anything else."""
    try:
        body()
        return EXIT_OK
    except AppError as error:
        label = "error: " if error.exit_code == EXIT_USER_ERROR else ""
        print(f"{prog}: {label}{error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - the last line of defence: show the traceback, exit 1
        traceback.print_exc()
        return EXIT_FAILURE


def main(argv: Optional[Sequence[str]] = None) -> int:
    return guarded("train.py", lambda: train(argv))


def train(argv: Optional[Sequence[str]] = None) -> None:
    """Parse, resolve a resume, build, run."""
    config = parse(argv)
    if os.environ.get("RANK", "0") == "0":  # rank 0 alone talks to W&B
        tracking.prestart(tracking.resolve_mode(config.wandb_mode))
    # heavy imports only after argument parsing, so that --help stays fast
    from ignite_app import resume
    from ignite_app.app import training

    checkpoint = None
    if config.resume:
        checkpoint = resume.read(config.resume)
    elif config.auto_resume:
        found = resume.find_auto_resume(config.output_dir)
        if found is None:
            print(f"--auto-resume: no checkpoint under {config.output_dir}; starting a new run.", flush=True)
        else:
            checkpoint = resume.load_checkpoint(found, f"{found} (newest under {config.output_dir})")
    if checkpoint is not None:
        # the checkpoint's config, with what this command line states explicitly on top
        config = parse(argv, base=checkpoint.meta["config"])
    print("Resolved config:\n" + config.to_yaml(), flush=True)
    # one process for now; `idist.Parallel(backend).run(training, config)` when distributed lands
    training(0, config, checkpoint)


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
