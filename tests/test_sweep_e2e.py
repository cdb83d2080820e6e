"""`scripts/sweep.py` offline end to end on digits: real Optuna storage, real trial processes, and each trial's
W&B offline run read back with `wandb leet inspect`. Trials are tiny (1-2 epochs of a 4/8-channel convnet)."""
import signal
import subprocess
import sys

import optuna
import pytest
import torch
import yaml
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from helpers import QUICK, ROOT, clean_env, history, inspect_summary, offline_runs, run_script, run_train
from ignite_app.cli import parse

pytestmark = pytest.mark.e2e

# no ONNX export and no test report (its PNG costs a trial about a second of CPU): the sweep is what is tested here
TINY = {"dataset": {"value": "digits"}, "epochs": {"value": 1}, "kernels": {"value": [4, 8]}, "onnx": {"value": False},
        "test-report": {"value": False}, "watch": {"value": "off"}, "log-interval": {"value": 5}}
METRIC = {"name": "validation/best_accuracy", "goal": "maximize"}


def write_sweep(tmp_path, name, method, parameters, **extra):
    config = {"name": name, "method": method, "metric": METRIC, "parameters": {**TINY, **parameters}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path.name


def env(tmp_path):
    return clean_env(tmp_path, OMP_NUM_THREADS="1")


def sweep(args, tmp_path, **kwargs):
    return run_script("sweep.py", args, tmp_path, env=env(tmp_path), **kwargs)


def journal(tmp_path, name):
    (tmp_path / "sweeps" / name).mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "sweeps" / name / "optuna-journal.log")))


def trial_runs(tmp_path, study):
    """{trial number: what `wandb leet inspect` reads from that trial's offline run}."""
    dirs = {d.name.rsplit("-", 1)[-1]: d for d in offline_runs(tmp_path)}
    return {t.number: inspect_summary(dirs[t.user_attrs["run_id"]]) for t in study.trials if t.user_attrs["run_id"] in dirs}


def test_random_sweep_in_two_processes_on_one_storage_then_resumed_and_stopped_by_ctrl_c(tmp_path):
    name = write_sweep(tmp_path, "rand", "random", {
        "lr": {"distribution": "log_uniform_values", "min": 0.002, "max": 0.03}, "batch-size": {"values": [32, 64]}})
    command = [sys.executable, str(ROOT / "scripts" / "sweep.py"), name, "--count", "2"]
    procs = [subprocess.Popen(command, cwd=tmp_path, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    study = optuna.load_study(study_name="rand", storage=journal(tmp_path, "rand"))
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs["run_id"] for t in trials}) == 4
    by_process = {}
    for t in trials:
        by_process.setdefault(t.user_attrs["pid"], []).append(t)
    assert sorted(len(ts) for ts in by_process.values()) == [2, 2]
    a, b = by_process.values()
    assert any(x.datetime_start < y.datetime_complete and y.datetime_start < x.datetime_complete
               for x in a for y in b), "the two processes' trials never ran at the same time"

    runs = trial_runs(tmp_path, study)
    assert sorted(runs) == [0, 1, 2, 3]
    for t in trials:
        run = runs[t.number]
        assert run["run_id"] == t.user_attrs["run_id"] and run["state"] == "finished"
        assert run["config"]["lr"] == t.params["lr"] and run["config"]["batch_size"] == t.params["batch-size"]
        assert run["config"]["wandb_group"] == "rand" and run["config"]["dataset"] == "digits"
        assert run["summary"]["sweep/trial"] == t.number and run["summary"]["sweep/state"] == "complete"
        assert run["summary"]["validation/best_accuracy"] == t.value
        assert (tmp_path / "sweeps" / "rand" / "runs" / t.user_attrs["run_id"] / "config.yaml").is_file()

    # rerun: the study continues; Ctrl-C during its first trial stops the sweep after that trial, with the table
    proc = subprocess.Popen([*command[:-1], "3"], cwd=tmp_path, env=env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("trial 4:"):
            proc.send_signal(signal.SIGINT)  # the terminal's Ctrl-C; the trial runs in its own session
            break
    rest, err = proc.communicate(timeout=300)
    out = "".join(seen) + rest
    assert proc.returncode == 130, out + err
    assert "stopping after the current trial" in err and "Traceback" not in err
    study = optuna.load_study(study_name="rand", storage=journal(tmp_path, "rand"))
    assert len(study.trials) == 5 and study.trials[4].state == TrialState.COMPLETE
    assert [t.params for t in study.trials[:4]] == [t.params for t in trials]  # continued, not restarted
    assert "Sweep rand: 5 trial(s)" in out and "complete" in out

    results = tmp_path / "sweeps" / "rand"
    assert len((results / "trials.csv").read_text().splitlines()) == 1 + 5
    best = max(study.trials, key=lambda t: t.value)
    config = parse(["--config", str(results / "best.yaml")])
    assert (config.lr, config.batch_size, config.handler) == (best.params["lr"], best.params["batch-size"], ())
    assert (results / "history.png").stat().st_size > 1000 and (results / "importances.png").stat().st_size > 1000


def test_grid_of_2x2_with_a_bad_combination_on_sqlite(tmp_path):
    name = write_sweep(tmp_path, "grid", "grid", {
        "lr-schedule": {"values": ["none", "onecycle"]}, "warmup_iters": {"values": [0, 2]}})
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    out = sweep([name, "--storage", storage], tmp_path)
    study = optuna.load_study(study_name="grid", storage=storage)
    combos = sorted((t.params["lr-schedule"], t.params["warmup_iters"]) for t in study.trials)
    assert combos == [("none", 0), ("none", 2), ("onecycle", 0), ("onecycle", 2)]
    (failed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert (failed.params["lr-schedule"], failed.params["warmup_iters"]) == ("onecycle", 2)
    assert "exit code 2" in failed.user_attrs["error"] and "does not combine" in failed.user_attrs["error"]
    assert "failed" in out.stdout and "the sweep goes on" in out.stdout

    runs = trial_runs(tmp_path, study)
    assert len(runs) == 3  # the bad combination was refused before it created a run
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            config = runs[t.number]["config"]
            assert (config["lr_schedule"], config["warmup_iters"]) == (t.params["lr-schedule"], t.params["warmup_iters"])

    again = sweep([name, "--storage", storage], tmp_path)
    assert "is complete" in again.stdout and len(optuna.load_study(study_name="grid", storage=storage).trials) == 4


def test_hyperband_prunes_a_trial_and_a_diverging_trial_fails_cleanly(tmp_path):
    name = write_sweep(
        tmp_path, "prune", "random", {"epochs": {"value": 2}, "optimizer": {"value": "sgd"},
                                      "lr": {"values": [0.1, 0.000001, 100000000.0]}},
        early_terminate={"type": "hyperband", "min_iter": 1, "max_iter": 2, "eta": 3},  # one bracket, a rung at epoch 1
    )
    # force the order: a good trial, then one far behind it at epoch 1 (pruned), then one whose loss becomes NaN
    study = optuna.create_study(study_name="prune", storage=journal(tmp_path, "prune"), direction="maximize")
    for lr in (0.1, 0.000001, 100000000.0):
        study.enqueue_trial({"lr": lr})
    out = sweep([name, "--count", "3"], tmp_path)

    study = optuna.load_study(study_name="prune", storage=journal(tmp_path, "prune"))
    good, pruned, diverged = study.trials
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert sorted(good.intermediate_values) == [1, 2] and list(pruned.intermediate_values) == [1]
    assert pruned.intermediate_values[1] < good.intermediate_values[1]
    assert "NaN" in diverged.user_attrs["error"] and diverged.user_attrs["exit_code"] == 1
    assert "pruned at epoch 1" in out.stdout

    runs = trial_runs(tmp_path, study)
    assert runs[pruned.number]["state"] == "finished"  # a pruned trial ends its run cleanly
    summary = runs[pruned.number]["summary"]
    assert (summary["sweep/state"], summary["sweep/pruned_at_epoch"], summary["trainer/epoch"]) == ("pruned", 1, 1)
    assert "test/accuracy" in summary
    summary = runs[diverged.number]["summary"]
    assert summary["sweep/state"] == "failed" and summary["sweep/trial"] == 2
    assert runs[good.number]["summary"]["sweep/state"] == "complete"


def test_a_sweep_agents_run_id_names_the_run_dir_and_checkpoints(tmp_path):
    """Under `wandb agent`, wandb.init takes WANDB_RUN_ID whatever id it is given: the run must use the same one."""
    run_train([*QUICK, "--kernels", "4", "8", "--no-onnx", "--no-test-report", "--watch", "off"], tmp_path,
              env=clean_env(tmp_path, WANDB_SWEEP_ID="sweep123", WANDB_RUN_ID="agentrun1", WANDB_MODE="offline"))
    (run,) = offline_runs(tmp_path)
    assert run.name.endswith("-agentrun1")
    summary = inspect_summary(run)
    assert summary["run_id"] == "agentrun1"
    run_dir = tmp_path / "runs" / "agentrun1"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["agentrun1"] and (run_dir / "config.yaml").is_file()
    checkpoint = sorted((run_dir / "checkpoints").glob("checkpoint_*.pt"))[-1]
    assert torch.load(checkpoint, weights_only=True)["meta"]["run_id"] == "agentrun1"
    # what a sweep ranks by: the best epoch, in the summary
    accuracies = [r["validation/accuracy"] for r in history(run) if "validation/accuracy" in r]
    assert summary["summary"]["validation/best_accuracy"] == max(accuracies)
    assert summary["summary"]["validation/best_epoch"] == 1 + accuracies.index(max(accuracies))
