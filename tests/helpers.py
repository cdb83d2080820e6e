"""Shared test helpers: run the scripts in a subprocess and read W&B offline runs back with `wandb leet inspect`."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# small and quick: the bundled digits, two epochs, no progress bar
QUICK = ["--dataset", "digits", "--epochs", "2", "--no-progress-bar", "--log-interval", "2"]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with no W&B credentials or mode, W&B writing under tmp_path (its data dir, where it stages
    artifact files, too: `staged_checkpoints`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_DIR=str(tmp_path),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
        WANDB_SILENT="true",
        NETRC=str(tmp_path / "no-netrc"),
        IGNITE_APP_NO_DOWNLOAD="1",
        PYTHONHASHSEED="0",
    )
    env.update(extra)
    return env


def run_script(script: str, args: Sequence[str], tmp_path: Path, env: Optional[dict] = None, timeout: int = 600,
               check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=tmp_path, env=env or clean_env(tmp_path), capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def run_train(args: Sequence[str], tmp_path: Path, **kwargs: Any) -> subprocess.CompletedProcess:
    return run_script("train.py", [*args, "--output-dir", str(tmp_path / "runs")], tmp_path, **kwargs)


def trained_once(tmp_path_factory: Any, name: str, args: Sequence[str]) -> Path:
    """A module fixture's body: one finished run of `args` in a fresh directory, which the module's tests read."""
    tmp = tmp_path_factory.mktemp(name)
    run_train(args, tmp)
    return tmp


def assert_same_state(expected: Any, actual: Any, where: str = "") -> None:
    """Bit for bit, all the way down (a state_dict, an optimizer's state and param_groups, a whole checkpoint): the
    same keys, the same lengths, torch.equal tensors, equal values. zip() over two optimizer states would stop at the
    shorter one and compare nothing that one of them lacks."""
    import torch

    if isinstance(expected, torch.Tensor) or isinstance(actual, torch.Tensor):
        assert isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor), where
        assert expected.dtype == actual.dtype and torch.equal(expected, actual), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(expected) == list(actual), (where, list(expected), list(actual))
        for key in expected:
            assert_same_state(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(expected) == len(actual), (where, len(expected), len(actual))
        for i, (a, b) in enumerate(zip(expected, actual)):
            assert_same_state(a, b, f"{where}[{i}]")
    else:
        assert expected == actual, (where, expected, actual)


def assert_same_training_state(expected: dict, actual: dict) -> None:
    """A checkpoint's weights and its whole optimizer (per-parameter state and param_groups: lr, betas, step
    counts) equal another's, bit for bit."""
    assert_same_state(expected["model"], actual["model"], "model")
    assert_same_state(expected["optimizer"], actual["optimizer"], "optimizer")


def staged_checkpoints(tmp_path: Path) -> list[Path]:
    """The checkpoint copies (torch.save zip archives) in W&B's artifact staging directory, where W&B keeps what an
    offline run logged until `wandb sync`, for runs that used `clean_env(tmp_path)`. (The ONNX model and tables
    logged as artifacts are staged too; they are not checkpoints.)"""
    import zipfile

    staging = tmp_path / "wandb-data" / "artifacts" / "staging"
    return [p for p in staging.rglob("*") if p.is_file() and zipfile.is_zipfile(p)]


def offline_runs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "wandb").glob("offline-run-*"))


def _inspect(run_dir: Path, *flags: str) -> str:
    """`wandb leet inspect [FLAGS] --json RUN_DIR`'s output. The suite reads some runs many times (the uninterrupted
    reference run of the resume tests, say), and each read is a process that imports wandb: the output is kept per
    state of the run's .wandb file (its size and modification time), so a run that changes is read again."""
    states = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(Path(run_dir).glob("*.wandb"))]
    return _inspect_once(str(run_dir), flags, tuple(states)) if states else _inspect_once.__wrapped__(str(run_dir), flags, ())


@functools.lru_cache(maxsize=None)
def _inspect_once(run_dir: str, flags: tuple[str, ...], _state: tuple) -> str:
    return subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", *flags, "--json", run_dir],
                          capture_output=True, text=True, check=True).stdout


def inspect_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads(_inspect(run_dir, "--summary"))


def inspect_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _inspect(run_dir).splitlines() if line.strip()]


def history(run_dir: Path) -> list[dict[str, Any]]:
    """History rows, each with its `_step`."""
    return [r["history"]["item"] for r in inspect_records(run_dir) if r["type"] == "history"]


def assert_wandb_sync_dry_run_takes_the_runs_in_order(tmp_path: Path, run_id: str, env: dict[str, str]) -> None:
    """The README's command for a resumed offline run, `wandb sync --dry-run wandb/offline-run-*-RUNID` (from
    tmp_path, where clean_env puts W&B's files), lists every offline directory of the run, in start order."""
    offline = [p for p in offline_runs(tmp_path) if p.name.endswith(run_id)]
    assert len(offline) >= 2, offline
    sync = subprocess.run(f"{sys.executable} -m wandb sync --dry-run wandb/offline-run-*-{run_id}", shell=True,
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    said = sync.stdout + sync.stderr
    listed = [line.split()[-1] for line in said.splitlines() if line.endswith(".wandb")]
    assert f"Would sync {len(offline)} run(s)" in said, said
    assert listed == [f"wandb/{p.name}/run-{run_id}.wandb" for p in offline], listed


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False, inodes: Optional[int] = None) -> Iterator[Path]:
    """A small tmpfs mounted at `path`: a disk that fills up (or is read-only, or has only `inodes` files) for real.
    Skips the calling test with the reason where it cannot be mounted (it needs root, and a sandbox that allows
    mounts)."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "") + (f",nr_inodes={inodes}" if inodes else "")
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                              text=True)
    except OSError as exc:  # no mount(8) at all
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (mount: {proc.stderr.strip() or proc.returncode}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)

