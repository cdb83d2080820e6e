"""Bad --resume input: a clear message, exit code 2, and nothing in the output directory written or overwritten."""
import argparse
import os
import shutil
from pathlib import Path

import pytest
import torch

from helpers import QUICK, ROOT, clean_env, offline_runs, run_train
from ignite_app.main import main

KILL = str(ROOT / "tests" / "user_handlers.py") + ":kill_at"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch `net` run on digits: its output dir, checkpoint and offline W&B run dir."""
    tmp = tmp_path_factory.mktemp("trained")
    run_train([*QUICK, "--epochs", "1", "--model", "net"], tmp)
    ckpt = next((tmp / "runs").glob("*/checkpoints/checkpoint_*.pt"))
    return tmp, ckpt, offline_runs(tmp)[0]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root but the W&B CLI's own debug log (`wandb leet inspect` writes one)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith("debug-cli")}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    for key, value in clean_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("WANDB_") and k not in ("WANDB_DIR", "WANDB_SILENT")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_main(args, tmp_path, capsys):
    before = snapshot(tmp_path)
    code = main([*QUICK, "--output-dir", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before  # nothing written, nothing overwritten
    return err


def copy_run(trained, tmp_path) -> Path:
    src_root, ckpt, _ = trained
    shutil.copytree(src_root / "runs", tmp_path / "runs")
    return tmp_path / "runs" / ckpt.relative_to(src_root / "runs")


@pytest.mark.e2e  # trains a run first
def test_truncated_checkpoint(trained, isolated, capsys):
    ckpt = copy_run(trained, isolated)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert "truncated or corrupt" in run_main(["--resume", str(ckpt)], isolated, capsys)


def test_garbage_checkpoint(isolated, capsys):
    bad = isolated / "garbage.pt"
    bad.write_bytes(os.urandom(4096))
    assert "truncated or corrupt" in run_main(["--resume", str(bad)], isolated, capsys)


def test_checkpoint_that_needs_arbitrary_unpickling_is_refused(isolated, capsys):
    evil = isolated / "evil.pt"
    torch.save({"model": {}, "trainer": {}, "meta": argparse.Namespace(run_id="x")}, evil)
    assert "arbitrary unpickling" in run_main(["--resume", str(evil)], isolated, capsys)


@pytest.mark.e2e  # trains a run first
def test_checkpoint_of_another_architecture_names_the_keys(trained, isolated, capsys):
    ckpt = copy_run(trained, isolated)
    err = run_main(["--resume", str(ckpt), "--model", "convnet"], isolated, capsys)
    assert "another architecture" in err and "backbone.conv1.weight" in err and "backbone.layer1.0.weight" in err


def test_not_an_ignite_app_checkpoint(isolated, capsys):
    other = isolated / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    assert "not an ignite-app checkpoint" in run_main(["--resume", str(other)], isolated, capsys)


def test_missing_path_and_empty_directory(isolated, capsys):
    assert "no such file or directory" in run_main(["--resume", str(isolated / "nope.pt")], isolated, capsys)
    (isolated / "empty").mkdir()
    assert "holds no checkpoint files" in run_main(["--resume", str(isolated / "empty")], isolated, capsys)


@pytest.mark.e2e  # trains a run first
def test_offline_run_with_missing_alias(trained, isolated, capsys):
    _, _, run_dir = trained
    err = run_main(["--resume", f"{run_dir}:no-such-alias"], isolated, capsys)
    assert "no checkpoint artifact with alias 'no-such-alias'" in err and "latest" in err


@pytest.mark.e2e  # trains a run first
def test_offline_run_whose_checkpoint_was_tampered_with(trained, isolated, capsys, tmp_path_factory):
    # the staged copy and the local file both differ from the digest the run recorded
    src_root, _, run_dir = trained
    tmp = tmp_path_factory.mktemp("tampered")
    run_train([*QUICK, "--epochs", "1"], tmp)
    (run_dir2,) = offline_runs(tmp)
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir2)],
                         capture_output=True, text=True, check=True).stdout
    staged = [Path(e["local_path"]) for line in out.splitlines() if '"type":"artifact"' in line.replace(" ", "")
              for e in json.loads(line)["artifact"]["manifest"]["contents"]]
    for path in staged + list((tmp / "runs").glob("*/checkpoints/*.pt")):
        os.chmod(path, 0o600)
        path.write_bytes(b"tampered")
    err = run_main(["--resume", str(run_dir2)], isolated, capsys)
    assert "no intact copy" in err and "digest differs" in err


@pytest.mark.e2e  # trains a run first
def test_offline_run_killed_before_its_first_checkpoint(isolated, capsys):
    proc = run_train([*QUICK, "--handler", KILL, "--handler-arg", "iteration=2", "--handler-arg", "seconds=2.5"],
                     isolated, check=False)
    assert proc.returncode == -9
    (run_dir,) = offline_runs(isolated)
    assert "logged no checkpoint artifact" in run_main(["--resume", str(run_dir)], isolated, capsys)


def test_wandb_spec_without_api_key(isolated, capsys):
    err = run_main(["--resume", "wandb:me/ignite-app/checkpoint-abc:latest"], isolated, capsys)
    assert "no API key is configured" in err


def test_wandb_spec_with_no_network(isolated, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    import wandb

    # WANDB_HTTP_TIMEOUT, read when wandb is imported: W&B retries the refused connection until it runs out
    monkeypatch.setattr(wandb.Api, "_HTTP_TIMEOUT", 1)
    err = run_main(["--resume", "wandb:me/ignite-app/checkpoint-abc:latest"], isolated, capsys)
    assert "Cannot reach the W&B API" in err


def test_malformed_wandb_spec(isolated, capsys):
    assert "not a W&B checkpoint spec" in run_main(["--resume", "wandb:just-a-name"], isolated, capsys)


@pytest.mark.e2e  # train.py in a subprocess that imports torch, ~3 s (test_bad_input checks train.py's exit 2 lighter)
def test_exit_code_2_from_the_script(isolated):
    proc = run_train([*QUICK, "--resume", str(isolated / "nope.pt")], isolated, check=False)
    assert proc.returncode == 2 and "no such file or directory" in proc.stderr and "Traceback" not in proc.stderr
