"""Config and command-line parsing: the seed's command line, both spellings, --key=value, --config files."""
import dataclasses
import subprocess
import sys

import pytest

from helpers import ROOT
from ignite_app.cli import parse
from ignite_app.config import PRESETS, Config, resolve, validate
from ignite_app.errors import UserError


def test_defaults_follow_the_wandb_tutorial():
    c = parse([])
    assert (c.model, c.kernels, c.optimizer, c.lr, c.batch_size, c.epochs) == ("convnet", (16, 32), "adam", 0.005, 128, 5)
    assert (c.watch, c.watch_freq) == ("gradients", 1000)


def test_seed_example_command_line_as_written():
    c = parse("--batch_size 64 --val_batch_size 1000 --epochs 10 --lr 0.01 --momentum 0.5 --log_interval 10".split())
    assert (c.batch_size, c.val_batch_size, c.epochs, c.lr, c.momentum, c.log_interval) == (64, 1000, 10, 0.01, 0.5, 10)


def test_kebab_case_and_key_equals_value_as_a_sweep_agent_passes():
    c = parse(["--batch-size=32", "--lr=0.1", "--optimizer=sgd", "--kernels=[8, 12]", "--progress-bar=false"])
    assert (c.batch_size, c.lr, c.optimizer, c.kernels, c.progress_bar) == (32, 0.1, "sgd", (8, 12), False)


@pytest.mark.parametrize("argv", [["--kernels", "8", "12"], ["--kernels", "8,12"], ["--kernels=[8,12]"]])
def test_kernels_spellings(argv):
    assert parse(argv).kernels == (8, 12)


def test_config_file_values_are_overridden_by_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nbatch-size: 16\nkernels: [4, 8]\nwandb_tags: [a, b]\n")
    c = parse(["--config", str(path), "--epochs", "3"])
    assert (c.epochs, c.batch_size, c.kernels, c.wandb_tags) == (3, 16, (4, 8), ("a", "b"))


def test_config_round_trips_through_yaml(tmp_path):
    c = parse(["--dataset", "digits", "--wandb-tags", "x", "y"])
    path = tmp_path / "config.yaml"
    c.save(path)
    assert parse(["--config", str(path)]) == c


@pytest.mark.parametrize(
    "argv, fragment",
    [(["--epochs", "0"], "--epochs"), (["--lr", "-1"], "--lr"), (["--val-fraction", "1.5"], "--val-fraction"),
     (["--kernels", "16"], "--kernels")],
)
def test_out_of_range_values_are_user_errors(argv, fragment):
    with pytest.raises(UserError, match=fragment):
        parse(argv)


def test_config_file_problems_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="Cannot read"):
        parse(["--config", str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(UserError, match="unknown option"):
        parse(["--config", str(bad)])


def test_unknown_choice_is_a_user_error_with_exit_code_2():
    with pytest.raises(UserError, match="--dataset must be one of mnist, fashion-mnist, digits, cifar10, imagefolder, got 'imagenet'") as exc:
        parse(["--dataset", "imagenet"])
    assert exc.value.exit_code == 2


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().epochs = 3  # type: ignore[misc]


def test_help_is_fast_and_imports_no_torch_or_wandb():
    code = (
        "import sys, io, contextlib\n"
        "from ignite_app.main import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit as e: assert e.code == 0\n"
        "assert '--batch_size' in buf.getvalue() and '--wandb-mode' in buf.getvalue()\n"
        "heavy = [m for m in ('torch', 'torchvision', 'wandb', 'ignite') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_preset_sets_values_that_flags_override(tmp_path):
    c = parse(["--preset", "fast"])
    assert (c.epochs, c.lr_schedule, c.lr) == (2, "onecycle", 0.01)
    assert parse(["--preset", "fast", "--epochs", "4"]).epochs == 4
    path = tmp_path / "c.yaml"
    path.write_text("preset: fast\nlr: 0.02\n")
    assert (parse(["--config", str(path)]).lr, parse(["--config", str(path)]).epochs) == (0.02, 2)


SWEEP_PARAMETERS = {"wandb_tags": ["a", "b c"], "wandb_name": None, "data_dir": None, "epochs": 3, "lr": 0.01,
                    "progress_bar": False, "kernels": [8, 16], "optimizer": "sgd", "val_fraction": 0.2, "handler": None}


def sweep_argvs() -> dict[str, list[str]]:
    """The command lines a W&B sweep agent builds from SWEEP_PARAMETERS (wandb's own function, `${args}` and
    `${args_no_equals}` / `${args_no_boolean_flags}` in a sweep's `command`)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    formats = create_sweep_command_args({"args": {k: {"value": v} for k, v in SWEEP_PARAMETERS.items()}})
    return {name: formats[name] for name in ("args", "args_no_equals", "args_no_boolean_flags")}


@pytest.mark.parametrize("form", ["args", "args_no_equals", "args_no_boolean_flags"])
def test_a_sweep_agents_command_line_parses_to_the_same_values_as_flags(form):
    argv = sweep_argvs()[form]
    if form == "args":
        assert "--wandb_tags=['a', 'b c']" in argv and "--wandb_name=None" in argv  # what the agent really writes
    c = parse(argv)
    assert c.wandb_tags == ("a", "b c")  # two tags, the second with its space
    assert c.wandb_name is None and c.data_dir is None and c.handler == ()  # unset, not the text "None"
    assert (c.epochs, c.lr, c.kernels, c.optimizer, c.val_fraction) == (3, 0.01, (8, 16), "sgd", 0.2)
    assert c.progress_bar is (form == "args_no_boolean_flags")  # that form drops a false flag: the default stays
    flags = parse(["--wandb-tags", "a", "b c", "--epochs", "3", "--lr", "0.01", "--kernels", "8", "16",
                   "--optimizer", "sgd", "--val-fraction", "0.2", "--progress-bar", str(c.progress_bar)])
    assert c == flags


def test_every_source_reads_values_by_the_same_rules(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("handler: hard-examples every=2\nwatch: off\nepochs: 2.0\nwandb_name: null\nwandb_tags: solo\n")
    c = parse(["--config", str(path)])
    assert c.handler == ("hard-examples every=2",)  # a string is one handler, not its characters
    assert c.watch == "off"  # YAML reads an unquoted off as False: the choice it spelled
    assert c.epochs == 2 and isinstance(c.epochs, int) and c.wandb_name is None and c.wandb_tags == ("solo",)
    base = {"epochs": "4", "kernels": [4, 8], "dropped_in_a_later_version": 1, "handler": ["x:y"], "resume": "r"}
    resumed = parse([], base=base)  # a checkpoint's config: same rules; its handlers and resume spec not inherited
    assert (resumed.epochs, resumed.kernels, resumed.handler, resumed.resume) == (4, (4, 8), (), None)
    with pytest.raises(UserError, match=r"epochs \(from the checkpoint's config\) must be a whole number, got 1.5"):
        parse([], base={"epochs": 1.5})


def test_preset_from_a_file_or_a_checkpoint_and_its_values_are_checked(tmp_path):
    assert parse([], base={"preset": "fast"}).lr_schedule == "onecycle"
    assert resolve(base={"preset": "fast", "epochs": 9}).epochs == 9  # the checkpoint's own values win
    for name, values in PRESETS.items():
        assert resolve(flags={"preset": name}) == validate(Config(preset=name, **values))


def test_validate_gives_a_python_config_the_schema_types():
    assert validate(Config(kernels=[8, 16], epochs=3.0)).kernels == (8, 16)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="--epochs must be a whole number, got 1.7"):
        validate(Config(epochs=1.7))  # type: ignore[arg-type]
    with pytest.raises(UserError, match="--lr must be a finite number, got nan"):
        validate(Config(lr=float("nan")))


@pytest.mark.parametrize("argv", [["--output_dir=None"], ["--output-dir="], ["--output-dir", " "]])
def test_a_null_output_dir_is_not_a_directory_named_none(argv):
    """A sweep agent writes a null parameter as `--output_dir=None`: not ./None/, nor '' (the current directory)."""
    with pytest.raises(UserError, match="--output-dir needs a value"):
        parse(argv)
