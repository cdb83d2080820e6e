"""W&B unreachable with an API key set (a fake key, WANDB_BASE_URL on a closed port of 127.0.0.1): --wandb-mode auto
falls back to offline within seconds, same run id, one line saying so; an explicit --wandb-mode online is a clear
error instead of a traceback after ~95 s."""
import socket

import pytest

from helpers import QUICK, clean_env, inspect_summary, offline_runs, run_train

pytestmark = pytest.mark.e2e


def unreachable_wandb(tmp_path, **extra):
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return clean_env(tmp_path, WANDB_API_KEY="x" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{port}", OMP_NUM_THREADS="1",
                     **extra)


def test_auto_mode_falls_back_to_offline(tmp_path):
    proc = run_train([*QUICK, "--epochs", "1", "--no-onnx", "--no-test-report"], tmp_path,
                     env=unreachable_wandb(tmp_path), timeout=120)
    fallback = [line for line in proc.stderr.splitlines() if "logging offline instead" in line]
    assert len(fallback) == 1 and "could not start the run online" in fallback[0], proc.stderr
    assert "Traceback" not in proc.stderr
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    (offline,) = offline_runs(tmp_path)
    assert offline.name.endswith(run_dir.name)  # the same run id, offline
    assert not list((tmp_path / "wandb").glob("run-*"))  # the failed online attempt left no directory to sync
    summary = inspect_summary(offline)
    assert summary["state"] == "finished" and summary["exit_code"] == 0, summary
    assert summary["summary"]["test/accuracy"] > 0.5


def test_explicit_online_mode_is_a_clear_error(tmp_path):
    proc = run_train([*QUICK, "--epochs", "1", "--wandb-mode", "online"], tmp_path,
                     env=unreachable_wandb(tmp_path, WANDB_INIT_TIMEOUT="2"), timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "W&B could not start the run online" in proc.stderr and "--wandb-mode offline" in proc.stderr
    assert "Traceback" not in proc.stderr
