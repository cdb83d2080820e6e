"""W&B unreachable with an API key set (a fake key, WANDB_BASE_URL on a closed port of 127.0.0.1): --wandb-mode auto
falls back to offline within seconds, same run id, one line saying so; an explicit --wandb-mode online is a clear
error instead of a traceback after ~95 s."""
import socket
import subprocess
import sys
import threading
import time

import pytest

from helpers import QUICK, ROOT, clean_env, inspect_summary, offline_runs, run_train

pytestmark = pytest.mark.e2e


def unreachable_wandb(tmp_path, **extra):
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return clean_env(tmp_path, WANDB_API_KEY="x" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{port}", OMP_NUM_THREADS="1",
                     **extra)


# generous upper bounds (2 loaded cores), far below what the unbounded wait cost: W&B's default init timeout is 90 s,
# and the run ended in a traceback after ~95 s
FALLBACK_WITHIN_S = 25  # from the process start: imports, data, model (~6 s), then W&B's 5 s init timeout (11 s measured)
FINISHED_WITHIN_S = 60  # one epoch of digits on top (13.5 s measured)


def run_train_timed(args, tmp_path, env):
    """`run_train`, with the time since the process start at which each stderr line appeared, and the total time."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args, "--output-dir",
                             str(tmp_path / "runs")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stamped: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: stamped.extend((time.monotonic() - start, line) for line in proc.stderr))
    reader.start()
    try:
        out = proc.stdout.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
        reader.join()
    return proc.returncode, out, stamped, time.monotonic() - start


def test_auto_mode_falls_back_to_offline_within_seconds(tmp_path):
    code, out, stamped, total = run_train_timed([*QUICK, "--epochs", "1", "--no-onnx", "--no-test-report"], tmp_path,
                                                unreachable_wandb(tmp_path))
    stderr = "".join(line for _, line in stamped)
    assert code == 0, stderr[-3000:]
    fallback = [(at, line) for at, line in stamped if "logging offline instead" in line]
    assert len(fallback) == 1 and "could not start the run online" in fallback[0][1], stderr
    print(f"fallback line {fallback[0][0]:.1f} s after the start; run finished in {total:.1f} s")
    assert fallback[0][0] < FALLBACK_WITHIN_S, f"the fallback line came {fallback[0][0]:.1f} s after the start"
    assert total < FINISHED_WITHIN_S, f"the run took {total:.1f} s"
    assert "Traceback" not in stderr and "Test results: test/accuracy" in out
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
