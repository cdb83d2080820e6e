"""Config and command-line parsing: the seed's command line, both spellings, --key=value, --config files."""
import subprocess
import sys

import pytest

from helpers import ROOT
from ignite_app.cli import parse
from ignite_app.config import Config
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


def test_unknown_choice_exits_2():
    with pytest.raises(SystemExit) as exc:
        parse(["--dataset", "imagenet"])
    assert exc.value.code == 2


def test_config_is_frozen():
    with pytest.raises(Exception):
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
