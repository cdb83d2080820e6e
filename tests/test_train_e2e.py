"""`scripts/train.py` end to end in a subprocess; what was logged is read back from the offline W&B run."""
import pytest
import yaml

from helpers import FMNIST_SYSTEM_DIR, QUICK, clean_env, history, inspect_summary, offline_runs, run_train

pytestmark = pytest.mark.e2e


# `net` (dropout: the RNG matters); the second test runs it again and compares. The progress bar is asked for,
# though the output is no terminal
SEEDED = [*QUICK, "--model", "net", "--progress-bar", "--wandb-tags", "e2e", "smoke"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("first")
    env = clean_env(tmp)
    del env["WANDB_SILENT"]  # the app's own W&B settings must keep W&B's console output out
    return tmp, run_train(SEEDED, tmp, env=env)


def test_digits_run_logs_everything_to_an_offline_wandb_run(first_run):
    tmp_path, proc = first_run
    (run_dir,) = offline_runs(tmp_path)
    assert f"wandb sync {run_dir}" in proc.stdout and f"wandb leet {run_dir}" in proc.stdout
    assert "Test results: test/accuracy" in proc.stdout
    assert "wandb:" not in proc.stderr and "wandb:" not in proc.stdout, proc.stderr  # e.g. run.save's symlink warning
    # the cause of that warning, which W&B's silent mode would hide: run.save of a file outside the run's files
    # directory symlinks it there; the ONNX handler saves a copy instead
    saved = run_dir / "files" / "model.onnx"
    assert saved.is_file() and not saved.is_symlink(), sorted(p.name for p in (run_dir / "files").iterdir())
    # not a terminal: no progress-bar fragments, one plain line per epoch instead
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("Epoch ")] == ["1/2", "2/2"]
    run_id = offline_runs(tmp_path)[0].name.rsplit("-", 1)[1]
    start = proc.stdout.split("Epoch 1/2")[0]  # the start-up message: the few values that matter, then the config file
    assert start.startswith(f"Run {run_id}: digits (") and "adam lr 0.005, 2 epochs of batch 128, device cpu" in start
    assert "config.yaml" in start and len(start.splitlines()) == 4

    summary = inspect_summary(run_dir)
    assert summary["state"] == "finished"
    assert summary["tags"] == ["e2e", "smoke"]
    config = summary["config"]
    assert config["dataset"] == "digits" and config["epochs"] == 2 and config["kernels"] == [16, 32]
    assert {k for k in config if not k.startswith("_")} >= set(yaml.safe_load((tmp_path / "runs" / summary["run_id"] / "config.yaml").read_text()))
    assert summary["summary"]["test/accuracy"] > 0.8

    rows = history(run_dir)
    steps = [r["_step"] for r in rows]
    assert steps == sorted(steps)
    loss_steps = [r["_step"] for r in rows if "training/loss" in r]
    assert loss_steps[:3] == [2, 4, 6]  # --log-interval 2
    assert all("lr/group_0" in r for r in rows if "training/loss" in r)
    val_rows = [r for r in rows if "validation/accuracy" in r]
    epoch_length = val_rows[0]["_step"]
    assert [r["_step"] for r in val_rows] == [epoch_length, 2 * epoch_length]  # on the trainer's iteration axis
    assert all("validation/loss" in r and "training/samples_per_second" in r for r in val_rows)


def test_same_seed_same_flags_same_metrics_to_the_last_digit(first_run, tmp_path):
    run_train(SEEDED, tmp_path)
    sa = inspect_summary(offline_runs(first_run[0])[0])["summary"]
    sb = inspect_summary(offline_runs(tmp_path)[0])["summary"]
    keys = ["test/accuracy", "test/loss", "validation/loss", "training/loss"]
    assert [sa[k] for k in keys] == [sb[k] for k in keys]


def test_wandb_disabled_writes_no_run(tmp_path):
    run_train([*QUICK, "--epochs", "1", "--wandb-mode", "disabled"], tmp_path)
    assert offline_runs(tmp_path) == []


def test_wandb_mode_from_environment_is_honoured(tmp_path):
    run_train([*QUICK, "--epochs", "1"], tmp_path, env=clean_env(tmp_path, WANDB_MODE="disabled"))
    assert offline_runs(tmp_path) == []


@pytest.mark.skipif(not FMNIST_SYSTEM_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_one_epoch_from_the_system_files(tmp_path):
    # a narrower convnet (8 16 channels: half the first layer's work, a quarter of the second's); 0.875 test accuracy
    proc = run_train(["--dataset", "fashion-mnist", "--epochs", "1", "--kernels", "8", "16", "--no-progress-bar",
                      "--watch", "off"], tmp_path,
                     env=clean_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert f"from {FMNIST_SYSTEM_DIR}" in proc.stdout
    summary = inspect_summary(offline_runs(tmp_path)[0])["summary"]
    assert summary["test/accuracy"] > 0.8
