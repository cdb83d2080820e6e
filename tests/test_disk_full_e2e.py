"""Disks that fill up mid-run, for real (a small tmpfs; skipped with the reason where none can be mounted):

- the checkpoint directory: one message, exit 1, the earlier checkpoints intact and no temporary file; after the user
  frees space, rerunning the command with --auto-resume finishes the run;
- WANDB_DIR: training and checkpoints go on, one warning line, the results are printed and written, exit 0, and
  W&B keeps what it recorded before the disk filled.
The disk is filled at the end of epoch 1 by a `--handler` (tests/disk_filler.py), as another process would."""
import contextlib
import subprocess
import sys

import pytest
import torch

from helpers import QUICK, ROOT, clean_env, history, inspect_records, offline_runs, run_train, tmpfs

pytestmark = pytest.mark.e2e

FILL_AFTER_EPOCH_1 = ["--handler", f"{ROOT / 'tests' / 'disk_filler.py'}:fill_at_epoch"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_full_checkpoint_disk_stops_with_one_message_then_auto_resume_finishes(tmp_path):
    with tmpfs(tmp_path / "runs", "4m") as runs:
        args = [*QUICK, "--no-onnx", "--auto-resume", *FILL_AFTER_EPOCH_1, "--handler-arg", f"path={runs}"]
        env = clean_env(tmp_path, **ONE_THREAD)
        proc = run_train(args, tmp_path, env=env, check=False)
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line: no traceback, no Ignite log line
        assert "could not be written (No space left on device)" in proc.stderr
        assert "Epoch 1/2" in proc.stdout and "Test results" not in proc.stdout
        (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
        checkpoints = run_dir / "checkpoints"
        names = sorted(p.name for p in checkpoints.iterdir())
        # epoch 1's latest and best files, intact (loadable); no tmp* file of the failed write. The best file is
        # named by the validation accuracy the run logged for epoch 1
        (first_run,) = offline_runs(tmp_path)
        (validation,) = [r for r in history(first_run) if "validation/accuracy" in r]
        best = f"best_checkpoint_11_validation_accuracy={validation['validation/accuracy']:.4f}.pt"
        assert validation["_step"] == 11 and names == [best, "checkpoint_11.pt"], names
        assert f"the newest complete checkpoint is {checkpoints / 'checkpoint_11.pt'}" in proc.stderr
        for name in names:
            assert torch.load(checkpoints / name, weights_only=True)["trainer"]["iteration"] == 11

        (runs / "fill").unlink()  # the user frees space and reruns the same command
        again = run_train(args, tmp_path, env=env)
        assert f"Resumed from {checkpoints / 'checkpoint_11.pt'}" in again.stdout, again.stdout
        assert "Test results" in again.stdout and "Traceback" not in again.stderr
        assert (checkpoints / "checkpoint_22.pt").is_file()
        # the resumed run is one W&B run in two offline directories: the README's sync command takes both, in order
        offline = offline_runs(tmp_path)
        assert len(offline) == 2 and all(p.name.endswith(run_dir.name) for p in offline)
        sync = subprocess.run(f"{sys.executable} -m wandb sync --dry-run wandb/offline-run-*-{run_dir.name}",
                              shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        said = sync.stdout + sync.stderr
        listed = [line.split()[-1] for line in said.splitlines() if line.endswith(".wandb")]
        assert "Would sync 2 run(s)" in said, said
        assert listed == [f"wandb/{p.name}/run-{run_dir.name}.wandb" for p in offline], listed


def test_full_wandb_dir_keeps_the_run(tmp_path):
    with tmpfs(tmp_path / "wandb-disk", "4m") as wandb_dir:
        env = clean_env(tmp_path, WANDB_DIR=str(wandb_dir), **ONE_THREAD)
        # --log-checkpoints all: each checkpoint is logged as saved (offline best-and-last logs at the end)
        args = [*QUICK, *FILL_AFTER_EPOCH_1, "--handler-arg", f"path={wandb_dir}", "--handler-arg", "delay=2",
                "--handler", "hard-examples", "--log-checkpoints", "all"]
        proc = run_train(args, tmp_path, env=env, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # one warning line, nothing else (it used to be ~9,000 lines of tracebacks and exit 1)
        assert proc.stderr.count("W&B cannot write its files") == 1, proc.stderr[-3000:]
        assert proc.stderr.strip().count("\n") == 0, proc.stderr[-3000:]
        assert "Test results: test/accuracy" in proc.stdout and "Test report: accuracy" in proc.stdout
        (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
        assert (run_dir / "checkpoints" / "checkpoint_22.pt").is_file()  # checkpoints go on after the disk filled
        assert (run_dir / "test_report.csv").is_file() and (run_dir / "model.onnx").is_file()

        (wandb_dir / "fill").unlink()
        (wandb_run,) = offline_runs(wandb_dir)
        # what W&B recorded before the disk filled is kept: epoch 1's losses and its checkpoint artifacts
        records = inspect_records(wandb_run)
        assert {r["history"]["item"]["_step"] for r in records if r["type"] == "history"} >= {2, 4, 6, 8, 10}
        assert any(r["type"] == "artifact" and "latest" in r["artifact"]["aliases"] for r in records)
        assert f"under {wandb_run}" in proc.stderr


def test_wandb_dir_too_full_to_start_a_run_turns_wandb_off(tmp_path):
    """A disk with no inodes left: W&B cannot even create its run directory (wandb.init raises); the run trains with
    W&B off and says so once."""
    with tmpfs(tmp_path / "wandb-disk", "1m", inodes=6) as wandb_dir:
        proc = run_train([*QUICK, "--epochs", "1", "--no-onnx", "--no-test-report"], tmp_path,
                         env=clean_env(tmp_path, WANDB_DIR=str(wandb_dir), **ONE_THREAD), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip().count("\n") == 0, proc.stderr[-3000:]
    assert "(No space left on device): W&B is off for this run" in proc.stderr, proc.stderr
    assert "W&B: disabled" in proc.stdout and "Test results: test/accuracy" in proc.stdout
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert (run_dir / "checkpoints" / "checkpoint_11.pt").is_file()


def test_unwritable_wandb_dir_at_start_turns_wandb_off_and_the_run_finishes(tmp_path):
    """A WANDB_DIR that cannot be written (a read-only mount, or permissions) was bad input, exit 2; it is a state of
    the disk like a full one, so now it costs W&B's records only: one warning, W&B off, the run trains, exit 0.
    (As root permissions do not stop writes: a read-only tmpfs there, skipped where none can be mounted.)"""
    import os

    wandb_dir = tmp_path / "wandb-disk"
    if os.geteuid() != 0:
        wandb_dir.mkdir()
        wandb_dir.chmod(0o555)
        context = contextlib.nullcontext(wandb_dir)
    else:
        context = tmpfs(wandb_dir, "1m", read_only=True)
    with context:
        proc = run_train([*QUICK, "--epochs", "1", "--no-onnx", "--no-test-report"], tmp_path,
                         env=clean_env(tmp_path, WANDB_DIR=str(wandb_dir), **ONE_THREAD), check=False)
        assert not list(wandb_dir.iterdir())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip().count("\n") == 0, proc.stderr[-3000:]  # one warning line
    assert f"W&B cannot write its files under {wandb_dir} (" in proc.stderr and "W&B is off for this run" in proc.stderr
    assert "read-only file system" in proc.stderr or "not writable" in proc.stderr, proc.stderr
    assert "W&B: disabled" in proc.stdout and "Test results: test/accuracy" in proc.stdout
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert (run_dir / "checkpoints" / "checkpoint_11.pt").is_file()
    assert not list(tmp_path.glob("wandb/*run-*"))  # not moved elsewhere (W&B's own fallback is the temp dir)
