"""The offline engine: Optuna drives a W&B sweep configuration; every trial is an ordinary `scripts/train.py` run.

Trials run as subprocesses, one at a time per sweep process, each in its own session:
  * a crash (a segfault, running out of memory, a NaN) ends the trial, not the sweep, and is recorded as failed;
  * each trial has fresh W&B, torch and CUDA state, exactly like a run started by hand or by `wandb agent`;
  * the terminal's Ctrl-C reaches only this process, which can then let the current trial finish.
The cost is the start (about 3 s of CPU per trial here for importing torch, Ignite, W&B and Optuna), small
against a real trial's training.

The study lives in Optuna storage that survives the process: a journal file by default, or an RDB URL
(`sqlite:///sweep.db`, `postgresql://...`). Rerunning continues it; several processes on one storage run trials in
parallel. The trial process reports per-epoch values to the same storage through `ignite_app.sweep_trial` (attached
with `--handler`), so the pruner sees them as they come.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import TrialState

from ignite_app.errors import UserError
from ignite_app.sweep_config import SweepSpec, trial_flags

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")  # the W&B agent's default
JOURNAL_NAME = "optuna-journal.log"
RDB_HEARTBEAT_SECONDS = 60  # RDB storage: a trial whose sweep process died is marked failed after 2 missed beats
TRIAL_HOOK = "ignite_app.sweep_trial:attach"
SECOND_SIGNAL_GRACE_SECONDS = 30  # after a second Ctrl-C, how long the trial gets to checkpoint before SIGKILL


class TrialFailed(Exception):
    """A trial process that ended without a result: recorded as failed, and the sweep goes on."""


@dataclass(frozen=True)
class SweepDirs:
    """Where a sweep keeps its files: sweeps/NAME/{optuna-journal.log, runs/, logs/, trials.csv, best.yaml, *.png}."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


# ---------------------------------------------------------------- storage, sampler, pruner, study


def storage_url(spec: SweepSpec, dirs: SweepDirs, storage: Optional[str]) -> str:
    """--storage as given (an RDB URL, or a journal file path), else the sweep's own journal file."""
    return storage or str(dirs.root / JOURNAL_NAME)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    if "://" in url:
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=RDB_HEARTBEAT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds for a bad URL or an unreachable server
            raise UserError(f"Cannot open the Optuna storage {url!r}: {type(exc).__name__}: {exc}. Check --storage "
                            "(e.g. sqlite:///sweep.db, postgresql://user@host/db).") from None
    path = Path(url).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """grid -> GridSampler, random -> RandomSampler, bayes -> TPE (Optuna's Bayesian optimization). Unseeded: two
    processes on one study must not draw the same points."""
    if spec.method == "grid":
        return optuna.samplers.GridSampler(spec.grid())
    if spec.method == "random":
        return optuna.samplers.RandomSampler()
    return optuna.samplers.TPESampler()


def make_pruner(early_terminate: Optional[dict[str, Any]], max_epochs: int) -> optuna.pruners.BasePruner:
    """W&B's `early_terminate: {type: hyperband, min_iter | max_iter + s, eta}` -> Optuna's HyperbandPruner, with
    epochs as the resource (a trial reports its validation metric once per epoch)."""
    if not early_terminate:
        return optuna.pruners.NopPruner()
    eta = int(early_terminate.get("eta", 3))
    max_resource = int(early_terminate.get("max_iter") or max_epochs)
    if early_terminate.get("min_iter"):
        min_resource = int(early_terminate["min_iter"])
    else:  # W&B: brackets at max_iter / eta^k for k = 1..s
        min_resource = max(1, max_resource // eta ** int(early_terminate["s"]))
    if min_resource > max_resource:
        raise UserError(f"early_terminate: min_iter {min_resource} is above the largest number of epochs a trial "
                        f"trains ({max_resource}); lower min_iter or raise max_iter / epochs.")
    return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource, reduction_factor=eta)


def fingerprint(spec: SweepSpec) -> dict[str, Any]:
    """What makes two runs of the command the same study (a changed search space is a new sweep)."""
    return json.loads(json.dumps({"method": spec.method, "metric": spec.metric, "goal": spec.goal,
                                  "parameters": spec.raw.get("parameters")}, sort_keys=True, default=str))


def open_study(spec: SweepSpec, storage: optuna.storages.BaseStorage, url: str, create: bool = True) -> optuna.Study:
    """Create the study, or continue it: the same name in the same storage, from the same configuration."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens, one per trial
    sampler, pruner = make_sampler(spec), make_pruner(spec.early_terminate, spec.max_epochs())
    if not create:
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            raise UserError(f"There is no sweep {spec.name!r} in {url} yet: run `scripts/sweep.py {spec.path}` first "
                            "(or give the --storage it used).") from None
    else:
        study = optuna.create_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction=spec.goal, load_if_exists=True)
    started_from = study.user_attrs.get("sweep")
    if started_from is None and create:
        study.set_user_attr("sweep", fingerprint(spec))
    elif started_from is not None and started_from != fingerprint(spec):
        raise UserError(f"The sweep {spec.name!r} in {url} was started from another configuration (method, metric or "
                        "parameters differ), and one study must not mix two search spaces. Give the changed file "
                        "another `name:` (or another --storage), or restore the original parameters.")
    if study.direction.name.lower() != spec.goal:
        raise UserError(f"The study {spec.name!r} in {url} {study.direction.name.lower()}s, but the sweep file's "
                        f"metric goal is {spec.goal}; use another `name:` for the new goal.")
    return study


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark failed the RUNNING trials whose sweep process on this host is gone (killed, or the machine rebooted).

    Optuna's heartbeat does this for RDB storage; its journal storage has none, hence this check by process id."""
    failed = []
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != host or _alive(int(attrs.get("pid", 0))):
            continue
        optuna.trial.Trial(study, trial._trial_id).set_user_attr(
            "error", "its sweep process ended before the trial did (killed?)")
        study.tell(trial.number, state=TrialState.FAIL)
        failed.append(trial.number)
    return failed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))


# ---------------------------------------------------------------- one trial


def trial_command(spec: SweepSpec, args: list[str]) -> list[str]:
    """The trial's command line, expanded from the file's `command` (default `${env} ${interpreter} ${program}
    ${args}`) the way the W&B agent expands it, except that ${interpreter} is this Python (the agent's is a bare
    `python`, which may not be the one with this project installed)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command

    program = str(spec.raw.get("program") or TRAIN_SCRIPT)
    macros = {"env": ["/usr/bin/env"], "interpreter": [sys.executable], "program": [program], "args": args}
    command: list[str] = []
    for chunk in create_sweep_command([str(c) for c in (spec.raw.get("command") or DEFAULT_COMMAND)]):
        if chunk.startswith("${") and chunk.endswith("}"):
            command += macros.get(chunk[2:-1], [])
        else:
            command.append(chunk)
    return command


class StopControl:
    """Ctrl-C stops the sweep after the current trial; a second Ctrl-C (or SIGTERM) stops the trial now: it gets
    SIGTERM (it checkpoints and exits), then SIGKILL if it has not ended after a grace period."""

    def __init__(self) -> None:
        self.requested = False
        self.now = False
        self.proc: Optional[subprocess.Popen] = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and not self.requested:
            self.requested = True
            print("\nsweep: stopping after the current trial; press Ctrl-C again to stop it now.", file=sys.stderr,
                  flush=True)
            return
        self.requested = self.now = True
        if self.proc is not None and self.proc.poll() is None:
            print("\nsweep: stopping the current trial now.", file=sys.stderr, flush=True)
            os.killpg(self.proc.pid, signal.SIGTERM)

    def wait(self, proc: subprocess.Popen) -> int:
        self.proc = proc
        try:
            while True:
                try:
                    return proc.wait(timeout=SECOND_SIGNAL_GRACE_SECONDS if self.now else None)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        finally:
            self.proc = None

    def stop_study(self, study: optuna.Study, _trial: Any) -> None:
        """An Optuna callback: end `optimize` after a trial once a stop was asked for."""
        if self.requested:
            study.stop()


class TrialRunner:
    """The Optuna objective: suggest the parameters, run `scripts/train.py` with them, return the trial's metric."""

    def __init__(self, spec: SweepSpec, dirs: SweepDirs, storage_url: str, control: StopControl,
                 wandb_offline: bool) -> None:
        self.spec, self.dirs, self.storage_url, self.control = spec, dirs, storage_url, control
        self.wandb_offline = wandb_offline

    def extra_flags(self, trial: optuna.Trial, result_path: Path) -> list[str]:
        """What makes a run a trial of this sweep (unless the sweep file sets it): its directory, its W&B group
        and name, no progress bar in the log file, and the hook that reports to the study."""
        spec, set_by_file = self.spec, {p.field for p in self.spec.params}
        hook = {"storage": self.storage_url, "study": spec.name, "trial_id": trial._trial_id, "number": trial.number,
                "metric": spec.metric, "early_terminate": spec.early_terminate, "max_epochs": spec.max_epochs(),
                "result": str(result_path)}
        defaults = {"output_dir": str(self.dirs.runs.resolve()), "wandb_group": spec.name,
                    "wandb_name": f"{spec.name}-{trial.number}", "progress_bar": False}
        flags = {k: v for k, v in defaults.items() if k not in set_by_file}
        flags["handler"] = f"{TRIAL_HOOK} {json.dumps(hook)}"
        return trial_flags(flags)

    def environment(self, run_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SWEEP_ID", "WANDB_RUN_ID")}
        env["WANDB_RUN_ID"] = run_id  # the app names its run directory after it, W&B its run
        if self.wandb_offline and not env.get("WANDB_MODE"):
            env["WANDB_MODE"] = "offline"
        return env

    def __call__(self, trial: optuna.Trial) -> float:
        from wandb.sdk.lib.runid import generate_id

        spec = self.spec
        suggested = {p.name: p.suggest(trial) for p in spec.searched}
        values = {**spec.fixed, **suggested}
        run_id = generate_id()
        self.dirs.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.dirs.logs / f"trial-{trial.number}.log"
        result_path = self.dirs.logs / f"trial-{trial.number}.json"
        run_dir = Path(values.get("output_dir") or values.get("output-dir") or self.dirs.runs) / run_id
        for key, value in {"run_id": run_id, "run_dir": str(run_dir), "log": str(log_path),
                           "host": socket.gethostname(), "pid": os.getpid()}.items():
            trial.set_user_attr(key, value)
        command = trial_command(spec, trial_flags(values) + self.extra_flags(trial, result_path))
        shown = ", ".join(f"{k}={v}" for k, v in suggested.items())
        print(f"trial {trial.number}: {shown}  (run {run_id}, log {log_path})", flush=True)
        started = time.monotonic()
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.environment(run_id),
                                    start_new_session=True)  # the terminal's Ctrl-C is ours to handle
            exit_code = self.control.wait(proc)
        seconds = time.monotonic() - started
        trial.set_user_attr("exit_code", exit_code)
        trial.set_user_attr("seconds", round(seconds, 1))
        result = _read_json(result_path) if exit_code == 0 else None
        if result is not None and result.get("state") == "pruned":
            print(f"trial {trial.number}: pruned at epoch {result.get('epoch')} ({seconds:.0f} s)", flush=True)
            raise optuna.TrialPruned(f"pruned at epoch {result.get('epoch')}")
        value = (result or {}).get("values", {}).get(spec.metric)
        if value is not None and math.isfinite(value):
            print(f"trial {trial.number}: {spec.metric} {value:.4f} ({seconds:.0f} s)", flush=True)
            return float(value)
        why = ("stopped by Ctrl-C" if self.control.now else
               f"exit code {exit_code}: {_last_error_line(log_path)}" if exit_code else
               f"the run reported no finite {spec.metric}")
        trial.set_user_attr("error", why)
        print(f"trial {trial.number}: failed ({why}); the sweep goes on. Log: {log_path}", flush=True)
        raise TrialFailed(why)


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_error_line(log_path: Path) -> str:
    """The line that says why a trial process failed: its one-paragraph error, or the exception of a traceback."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("train.py:", "usage:")) or "Error" in line.split(":")[0] or line.startswith("Killed"):
            return line[:500]
    return lines[-1][:500] if lines else "no output"


# ---------------------------------------------------------------- the loop


def optimize(spec: SweepSpec, study: optuna.Study, dirs: SweepDirs, url: str, count: Optional[int],
             wandb_offline: bool) -> bool:
    """Run trials until `count` more have run, the grid or run_cap is done, or Ctrl-C. True when stopped by Ctrl-C."""
    stale = fail_stale_trials(study)
    if stale:
        print(f"sweep: marked failed the trial(s) {stale}, left running by a sweep process that is gone.", flush=True)
    done = finished_count(study)
    limit = spec.grid_size() or spec.run_cap
    if limit and done >= limit:
        print(f"sweep: {spec.name} is complete ({done} trials"
              f"{' of the grid' if spec.grid_size() else f', run_cap {spec.run_cap}'}); nothing to run.", flush=True)
        return False
    if count is None and not limit:
        print("sweep: no --count and no run_cap: running trials until Ctrl-C (as `wandb agent` does).", flush=True)
    control = StopControl()
    control.install()
    callbacks: list[Any] = [control.stop_study]
    if spec.run_cap:
        callbacks.append(optuna.study.MaxTrialsCallback(spec.run_cap, states=None))
    try:
        study.optimize(TrialRunner(spec, dirs, url, control, wandb_offline), n_trials=count, catch=(TrialFailed,),
                       callbacks=callbacks)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return control.requested
