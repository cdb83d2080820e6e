"""`python scripts/sweep.py SWEEP.yaml [--count N] [--offline] [--storage URL] [--sweep-id ID] [--report]`

One W&B sweep configuration, two engines:
  online   (an API key and a reachable W&B, no --offline): create the sweep (or join --sweep-id) and run W&B's agent,
           which starts `scripts/train.py --flag=value ...` per trial;
  offline  (otherwise): Optuna drives the same file (`ignite_app.sweep_optuna`), with its study in storage that
           survives the process, so rerunning continues it and several processes share it.
Either way the end (or `--report`, at any time) prints the table of trials and writes, under sweeps/NAME/, the
study as CSV, the best configuration as YAML for `train.py --config`, and plots.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ignite_app.cli import ShortUsageParser
from ignite_app.errors import AppError, UserError

SWEEPS_DIR = "sweeps"
EXIT_INTERRUPTED = 130


class SweepInterrupted(AppError):
    """Ctrl-C: the sweep stopped after (or during) a trial; the table was printed."""

    exit_code = EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = ShortUsageParser(  # a mistake: the usage line and one paragraph, exit 2 (as train.py)
        prog="sweep.py", usage="%(prog)s SWEEP.yaml [--count N] [--offline] [options]  (all options: %(prog)s --help)",
        description="Run a W&B sweep configuration: W&B's agent online, Optuna offline (the same file).",
    )
    parser.add_argument("sweep", metavar="SWEEP.yaml", help="a W&B sweep configuration whose parameters are train.py flags")
    parser.add_argument("--count", type=int, help="run N more trials in this process (default: the whole grid, "
                        "run_cap, or until Ctrl-C)")
    parser.add_argument("--offline", action="store_true", help="use Optuna even when W&B is reachable (trials log "
                        "offline W&B runs)")
    parser.add_argument("--storage", metavar="URL", help="offline: the Optuna storage, an RDB URL (sqlite:///sweep.db, "
                        "postgresql://...) or a journal file (default: sweeps/NAME/optuna-journal.log)")
    parser.add_argument("--sweep-id", "--sweep_id", metavar="ID", help="online: join this W&B sweep instead of creating one")
    parser.add_argument("--project", help="online: W&B project (default: the file's `project`, $WANDB_PROJECT, ignite-app)")
    parser.add_argument("--entity", help="online: W&B entity (default: the file's `entity`, $WANDB_ENTITY, yours)")
    parser.add_argument("--report", action="store_true", help="print the table and write the results; run no trial")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ignite_app.main import guarded

    return guarded("sweep.py", lambda: run(argv))


def run(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.count is not None and args.count < 1:
        raise UserError(f"--count must be at least 1, got {args.count}.")
    online = _online_wanted(args)
    from ignite_app import sweep_config

    spec = sweep_config.read(args.sweep, offline=not online)  # every check before any trial or file
    root = Path(SWEEPS_DIR, spec.name).resolve()
    if online:
        from ignite_app import sweep_wandb

        sweep_wandb.run(spec, root, args)
    else:
        run_offline(spec, root, args)


def _online_wanted(args: argparse.Namespace) -> bool:
    """Online when W&B can take the sweep: no --offline, an API key, and the API answers."""
    from ignite_app import tracking

    if args.offline or not tracking.api_key_configured():
        if args.sweep_id:
            raise UserError("--sweep-id joins a W&B sweep, which needs W&B online: configure an API key (wandb login) "
                            "and drop --offline, or run the sweep offline without --sweep-id.")
        return False
    if (os.environ.get("WANDB_MODE") or "").lower() in ("offline", "dryrun", "disabled"):
        return False
    from ignite_app import sweep_wandb

    reason = sweep_wandb.unreachable()
    if reason is None:
        return True
    if args.sweep_id:
        raise UserError(f"--sweep-id {args.sweep_id}: W&B does not answer ({reason}); check the network, or run offline.")
    print(f"sweep.py: W&B does not answer ({reason}); running the sweep offline with Optuna.", flush=True)
    return False


def run_offline(spec: Any, root: Path, args: argparse.Namespace) -> None:
    from ignite_app import sweep_optuna, sweep_report

    dirs = sweep_optuna.SweepDirs(root)
    url = sweep_optuna.storage_url(spec, dirs, args.storage)
    storage = sweep_optuna.open_storage(url)
    study = sweep_optuna.open_study(spec, storage, url, create=not args.report)
    interrupted = False
    if not args.report:
        print(f"Sweep {spec.name} ({spec.method}, {spec.goal} {spec.metric}) with Optuna; study in {url}; "
              f"trials under {dirs.runs}", flush=True)
        interrupted = sweep_optuna.optimize(spec, study, dirs, url, args.count, wandb_offline=True)
    sweep_report.write_report(study, sweep_report.rows_from_study(study), spec, root)
    if interrupted:
        raise SweepInterrupted(f"stopped by Ctrl-C; rerun `scripts/sweep.py {args.sweep}` to continue the sweep.")


def main_exit() -> None:
    from ignite_app.main import exit_process

    exit_process(main())
