"""WANDB_DIR full: training and checkpoints go on, one warning, exit 0 (was ~9,000 lines of tracebacks, exit 1)."""
import subprocess
from pathlib import Path

import pytest

from helpers import QUICK, clean_env, run_train

pytestmark = pytest.mark.e2e


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 1 MiB tmpfs filled to the last block (needs root and a mountable tmpfs; skipped with the reason otherwise)."""
    mount = tmp_path / "full"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); needs root")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={mount / 'fill'}", "bs=4k"], capture_output=True, check=False)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_wandb_dir_keeps_the_run(tmp_path, full_tmpfs):
    proc = run_train([*QUICK, "--epochs", "1", "--no-onnx"], tmp_path, env=clean_env(tmp_path, WANDB_DIR=str(full_tmpfs)),
                     check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Test results:" in proc.stdout
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    assert proc.stderr.count("W&B could not write its files") == 1
    assert list((tmp_path / "runs").glob("*/checkpoints/checkpoint_*.pt"))
