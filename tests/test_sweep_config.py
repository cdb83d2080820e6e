"""Sweep files checked before any trial runs; what a W&B agent passes parses to the expected Config; the mapping of
W&B's methods, distributions and hyperband onto Optuna; the run id a sweep agent gives; the best-metric handler."""
import math
import os

import optuna
import pytest
import yaml
from ignite.engine import Engine
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from ignite_app import sweep, sweep_config, tracking
from ignite_app.cli import parse
from ignite_app.errors import UserError
from ignite_app.handlers.best_metrics import BestMetrics
from ignite_app.sweep_optuna import make_pruner, make_sampler, trial_command
from ignite_app.sweep_report import TrialRow, write_best

GOOD = {
    "method": "random",
    "metric": {"name": "validation/best_accuracy", "goal": "maximize"},
    "parameters": {"dataset": {"value": "digits"}, "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
                   "batch-size": {"values": [32, 64]}},
}


def spec_of(tmp_path, config, offline=True, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return sweep_config.read(path, offline=offline)


def with_params(**params):
    return {**GOOD, "parameters": {**GOOD["parameters"], **params}}


# ------------------------------------------------------------------ the argv a W&B agent builds


def agent_argv(values):
    """Exactly what `wandb agent` puts in ${args} for a run with these parameter values."""
    return create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})["args"]


def test_the_argv_a_wandb_agent_builds_parses_to_the_expected_config():
    values = {"batch-size": 64, "lr": 0.0003, "optimizer": "sgd", "kernels": [8, 16], "wandb_tags": ["a", "b"],
              "progress_bar": False, "amp": True, "weight-decay": 0.0, "epochs": 3, "dataset": "digits"}
    argv = agent_argv(values)
    assert "--kernels=[8, 16]" in argv and "--progress_bar=False" in argv
    c = parse(argv)
    assert (c.batch_size, c.lr, c.optimizer, c.kernels, c.wandb_tags) == (64, 0.0003, "sgd", (8, 16), ("a", "b"))
    assert (c.progress_bar, c.amp, c.weight_decay, c.epochs, c.dataset) == (False, True, 0.0, 3, "digits")


def test_the_agent_passes_none_as_the_text_None_and_it_parses_to_none():
    c = parse(agent_argv({"data_dir": None, "wandb-name": None, "lr": 0.01}))
    assert (c.data_dir, c.wandb_name, c.lr) == (None, None, 0.01)


def test_offline_trial_commands_are_the_agents_argv_behind_this_python(tmp_path):
    import sys

    spec = spec_of(tmp_path, GOOD)
    command = trial_command(spec, sweep_config.trial_flags({"lr": 0.01, "kernels": "[8, 16]"}))
    assert command[:2] == ["/usr/bin/env", sys.executable] and command[2].endswith("scripts/train.py")
    assert command[3:] == agent_argv({"lr": 0.01, "kernels": [8, 16]})
    torchrun = spec_of(tmp_path, {**GOOD, "command": ["${env}", "torchrun", "--nproc_per_node=2", "${program}", "${args}"]})
    assert trial_command(torchrun, ["--lr=0.1"])[:3] == ["/usr/bin/env", "torchrun", "--nproc_per_node=2"]


# ------------------------------------------------------------------ bad sweep files: exit 2, nothing written


@pytest.mark.parametrize("config, fragment", [
    (with_params(**{"learning-rate": {"values": [0.1]}}), "'learning-rate' is not a flag"),
    (with_params(lr={"distribution": "uniform", "min": -1.0, "max": 0.1}), "--lr must be greater than 0"),
    (with_params(optimizer={"values": ["adam", "rmsprop"]}), "rmsprop"),
    (with_params(epochs={"distribution": "uniform", "min": 1, "max": 3.5}), "epochs"),
    (with_params(lr={"min": 0.1, "max": 0.01}), "must be less than `max`"),
    (with_params(batch_size={"values": [16]}), "are the same flag"),
    (with_params(resume={"values": ["a", "b"]}), "cannot be swept"),
    (with_params(lr={"distribution": "normal", "mu": 0.01, "sigma": 0.001}), "no Optuna equivalent"),
    (with_params(model={"parameters": {"depth": {"values": [1]}}}), "nested parameters"),
    ({**GOOD, "method": "hyperopt"}, "`method` must be one of grid, random, bayes"),
    ({**GOOD, "metric": {"name": "val_acc", "goal": "maximize"}}, "metric 'val_acc' is not one a run reports"),
    ({k: v for k, v in GOOD.items() if k != "metric"}, "`metric` is missing"),
    ({**GOOD, "metric": {"name": "validation/loss", "goal": "lowest"}}, "minimize or maximize"),
    ({**GOOD, "method": "grid"}, "a grid sweep needs `values`"),
    ({**GOOD, "early_terminate": {"type": "median"}}, "type: hyperband"),
    ({**GOOD, "early_terminate": {"type": "hyperband", "eta": 3}}, "needs `min_iter`"),
    ({**GOOD, "paramters": {}}, "unknown key(s) paramters"),
    ({**GOOD, "parameters": {"dataset": {"value": "digits"}}}, "no parameter varies"),
    ({**GOOD, "command": ["${env}", "${interpreter}", "${program}", "${args_json}"]}, "${args}"),
])
def test_bad_sweep_files_are_one_paragraph_errors(tmp_path, config, fragment):
    with pytest.raises(UserError) as info:
        spec_of(tmp_path, config)
    assert fragment in str(info.value) and "Nothing was run" in str(info.value)


def test_scripts_sweep_exits_2_and_writes_nothing_for_a_bad_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(with_params(lr={"values": [0.1, -0.5]}, momentum={"values": [1.5]})))
    assert sweep.main(["bad.yaml", "--offline"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sweep.py: error:") and "Traceback" not in err
    assert "value -0.5: --lr must be greater than 0" in err and "--momentum must be less than 1" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.yaml"]


@pytest.mark.parametrize("argv, fragment", [(["missing.yaml"], "Cannot read the sweep file"),
                                            (["s.yaml", "--count", "0"], "--count must be at least 1"),
                                            (["s.yaml", "--sweep-id", "abc", "--offline"], "needs W&B online")])
def test_bad_command_lines_exit_2(tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(GOOD))
    assert sweep.main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_argparse_errors_show_the_usage_line_not_the_usage_block(tmp_path, monkeypatch, capsys):
    """An argparse mistake is a user error like any other (exit 2 through `guarded`, not argparse's SystemExit),
    after the one-line usage."""
    monkeypatch.chdir(tmp_path)
    assert sweep.main(["s.yaml", "--count", "many"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "usage: sweep.py SWEEP.yaml [--count N] [--offline] [options]  (all options: sweep.py --help)",
        "sweep.py: error: argument --count: invalid int value: 'many'"]
    assert list(tmp_path.iterdir()) == []


def test_report_of_a_sweep_that_never_ran_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(GOOD))
    assert sweep.main(["s.yaml", "--report", "--offline"]) == 2
    assert "There is no sweep 's'" in capsys.readouterr().err


# ------------------------------------------------------------------ W&B -> Optuna


def test_distributions_map_onto_optuna(tmp_path):
    spec = spec_of(tmp_path, with_params(
        momentum={"distribution": "q_uniform", "min": 0.0, "max": 0.9, "q": 0.3},
        weight_decay={"distribution": "log_uniform", "min": math.log(1e-5), "max": math.log(1e-2)},
        epochs={"min": 1, "max": 3},  # inferred int_uniform
        val_batch_size={"distribution": "q_log_uniform_values", "min": 100, "max": 1000, "q": 1},
        kernels={"values": [[8, 16], [16, 32]]},
    ))
    params = {p.field: p for p in spec.params}
    assert params["dataset"].kind == "fixed" and spec.fixed == {"dataset": "digits"}
    assert (params["lr"].kind, params["lr"].log) == ("float", True)
    assert params["momentum"].grid_values() == [0.0, 0.3, 0.6, 0.9]
    assert params["weight_decay"].low == pytest.approx(1e-5) and params["weight_decay"].log
    assert (params["epochs"].kind, params["epochs"].grid_values()) == ("int", [1, 2, 3])
    assert (params["val_batch_size"].kind, params["val_batch_size"].log) == ("int", True)
    assert params["kernels"].choices == ("[8, 16]", "[16, 32]")  # the agent's spelling, which the CLI reads
    assert params["batch_size"].name == "batch-size"  # the file's spelling is what the agent passes
    assert spec.max_epochs() == 3
    trial = optuna.create_study().ask()
    drawn = {p.name: p.suggest(trial) for p in spec.searched}
    assert parse(sweep_config.trial_flags({**spec.fixed, **drawn})).kernels in ((8, 16), (16, 32))


def test_methods_and_hyperband_map_onto_optuna(tmp_path):
    grid = spec_of(tmp_path, {**GOOD, "method": "grid", "parameters": {
        "lr": {"values": [0.1, 0.01]}, "batch_size": {"values": [16, 32, 64]}, "dataset": {"value": "digits"}}})
    assert isinstance(make_sampler(grid), optuna.samplers.GridSampler) and grid.grid_size() == 6
    assert len(sweep_config.combinations(grid)) == 6
    assert isinstance(make_sampler(spec_of(tmp_path, {**GOOD, "method": "bayes"})), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(spec_of(tmp_path, GOOD)), optuna.samplers.RandomSampler)
    assert isinstance(make_pruner(None, 5), optuna.pruners.NopPruner)
    pruner = make_pruner({"type": "hyperband", "min_iter": 1, "eta": 2}, 8)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (1, 8, 2)
    pruner = make_pruner({"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}, 5)
    assert (pruner._min_resource, pruner._max_resource) == (3, 27)
    with pytest.raises(UserError, match="min_iter 9 is above"):
        make_pruner({"type": "hyperband", "min_iter": 9}, 5)


def test_online_accepts_what_only_wandb_can_draw(tmp_path):
    spec = spec_of(tmp_path, with_params(lr={"distribution": "normal", "mu": 0.01, "sigma": 0.001}), offline=False)
    assert "lr" not in {p.field for p in spec.params}  # W&B draws it; nothing for us to map


# ------------------------------------------------------------------ the run id a sweep agent gives


def test_the_run_id_comes_from_a_sweep_agent_when_there_is_one():
    assert tracking.sweep_agent_run_id({"WANDB_RUN_ID": "abc123"}) is None
    assert tracking.sweep_agent_run_id({"WANDB_RUN_ID": "abc123", "WANDB_SWEEP_ID": "s1"}) == "abc123"
    assert tracking.given_run_id({"WANDB_RUN_ID": "abc123"}) == "abc123"
    assert tracking.given_run_id({}) is None
    with pytest.raises(UserError, match="cannot be a W&B run id"):
        tracking.given_run_id({"WANDB_RUN_ID": "../x"})


# ------------------------------------------------------------------ what sweeps rank by


def test_best_metrics_keep_the_best_epoch_and_survive_a_resume():
    trainer, evaluator, logged = Engine(lambda e, b: None), Engine(lambda e, b: None), []
    best = BestMetrics(trainer, lambda values, step: logged.append((step, values)))
    for epoch, (acc, loss) in enumerate([(0.8, 0.5), (0.9, 0.6), (0.85, 0.4)], start=1):
        trainer.state.epoch, trainer.state.iteration = epoch, 10 * epoch
        evaluator.state.metrics = {"accuracy": acc, "loss": loss}
        best(evaluator)
    assert logged[-1] == (30, {"validation/best_accuracy": 0.9, "validation/best_loss": 0.4, "validation/best_epoch": 2})
    again = BestMetrics(trainer, lambda values, step: None)
    again.load_state_dict(best.state_dict())
    assert again.values() == best.values()


def test_the_best_config_file_is_one_train_accepts(tmp_path):
    spec = spec_of(tmp_path, GOOD)
    run_dir = tmp_path / "runs" / "abc"
    run_dir.mkdir(parents=True)
    trial_config = parse(["--dataset=digits", "--lr=0.02", "--batch-size=64", f"--output-dir={tmp_path}/runs",
                          "--wandb-group=s", "--handler=ignite_app.sweep_trial:attach {}"])
    trial_config.save(run_dir / "config.yaml")
    path = write_best(TrialRow(3, "complete", 0.97, {"lr": 0.02, "batch-size": 64}, "abc", str(run_dir)), spec,
                      tmp_path / "best.yaml")
    written = yaml.safe_load(path.read_text())
    assert "handler" not in written and "output_dir" not in written and "wandb_group" not in written
    c = parse(["--config", str(path)])
    assert (c.lr, c.batch_size, c.dataset, c.handler, c.output_dir) == (0.02, 64, "digits", (), "runs")
    assert os.path.basename(path) == "best.yaml"
