"""Two real processes under torchrun (gloo, the CPU): one run, equal metrics on every rank, a SIGKILLed job resumed
bit-exactly under torchrun and in one process, a NaN on one rank and a dead rank stopping the whole job."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, clean_env, inspect_summary, offline_runs, run_train

pytestmark = pytest.mark.e2e

# `net` has dropout, so every rank's RNG state matters; 1294 training digits: 11 global batches of 128 per epoch
ARGS = ["--dataset", "digits", "--epochs", "2", "--model", "net", "--checkpoint-every", "4", "--no-progress-bar",
        "--log-interval", "2", "--no-onnx"]
FINAL = "checkpoint_22.pt"
HANDLERS = str(ROOT / "tests" / "user_handlers.py")


def torchrun(args, tmp_path: Path, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
         str(ROOT / "scripts" / "train.py"), *args, "--output-dir", str(tmp_path / "runs")],
        cwd=tmp_path, env=clean_env(tmp_path, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=timeout,
    )


def handler(name: str, **kwargs) -> list[str]:
    return ["--handler", f"{HANDLERS}:{name}", *[a for k, v in kwargs.items() for a in ("--handler-arg", f"{k}={v}")]]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


def ranks(tmp_path: Path) -> list[dict]:
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def checkpoint(tmp_path: Path, name: str = FINAL) -> dict:
    (path,) = (tmp_path / "runs").glob(f"*/checkpoints/{name}")
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(a: dict, b: dict) -> None:
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-processes")
    ok(torchrun([*ARGS, *handler("record_rank", directory=tmp)], tmp))
    return tmp


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A 2-process job SIGKILLed whole (launcher and workers) at iteration 6, after the checkpoint of iteration 4."""
    tmp = tmp_path_factory.mktemp("crashed")
    proc = torchrun([*ARGS, *handler("kill_job_at", iteration=6)], tmp)
    assert proc.returncode == -9, proc.stderr[-3000:]
    shutil.copytree(tmp / "runs", tmp / "pristine-runs")
    return tmp


def test_one_run_one_directory_and_the_same_metrics_on_every_rank(uninterrupted):
    (run_dir,) = offline_runs(uninterrupted)
    (out,) = (uninterrupted / "runs").iterdir()
    summary = inspect_summary(run_dir)
    assert summary["run_id"] == out.name
    r0, r1 = ranks(uninterrupted)
    assert r0["world_size"] == r1["world_size"] == 2 and r0["iteration"] == r1["iteration"] == 22
    assert r0["validation"] == r1["validation"] and r0["test"] == r1["test"]
    assert summary["summary"]["test/accuracy"] == r0["test"]["accuracy"] > 0.8
    # 359 test digits: 180 + 179 per rank, none padded or counted twice, so accuracy is a multiple of 1/359
    assert round(r0["test"]["accuracy"] * 359, 6) == round(r0["test"]["accuracy"] * 359)
    content = checkpoint(uninterrupted)
    assert content["rng"]["world_size"] == 2 and len(content["rng"]["ranks"]) == 2
    assert not torch.equal(content["rng"]["ranks"][0]["torch"], content["rng"]["ranks"][1]["torch"])


def test_sigkilled_job_auto_resumes_under_torchrun_bit_exactly(uninterrupted, crashed, tmp_path):
    shutil.copytree(crashed / "pristine-runs", tmp_path / "runs")
    for wandb_dir in (crashed / "wandb").glob("offline-run-*"):
        shutil.copytree(wandb_dir, tmp_path / "wandb" / wandb_dir.name)
    resumed = ok(torchrun([*ARGS, "--auto-resume"], tmp_path))
    assert "checkpoint_4.pt" in resumed.stdout and "at iteration 4" in resumed.stdout
    assert "Warning" not in resumed.stdout
    assert_same_training_state(checkpoint(uninterrupted), checkpoint(tmp_path))
    assert len(list((tmp_path / "runs").iterdir())) == 1
    runs = offline_runs(tmp_path)
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[1] for r in runs}) == 1  # the same W&B run continued
    summary = inspect_summary(runs[-1])["summary"]
    assert summary["test/accuracy"] == inspect_summary(offline_runs(uninterrupted)[0])["summary"]["test/accuracy"]


def test_two_process_checkpoint_continues_in_one_process(crashed, tmp_path):
    shutil.copytree(crashed / "pristine-runs", tmp_path / "runs")
    (ckpt,) = (tmp_path / "runs").glob("*/checkpoints/checkpoint_4.pt")
    proc = run_train([*ARGS, "--resume", str(ckpt)], tmp_path, env=clean_env(tmp_path, OMP_NUM_THREADS="1"))
    assert "at iteration 4" in proc.stdout
    assert "written by 2 process(es) and continues in 1" in proc.stdout and "no longer bit-exact" in proc.stdout
    assert checkpoint(tmp_path)["trainer"]["iteration"] == 22


def test_nan_on_one_rank_stops_every_rank_at_the_same_iteration(tmp_path):
    proc = torchrun([*ARGS, *handler("nan_on_rank", rank=1, iteration=3), *handler("record_rank", directory=tmp_path)],
                    tmp_path, timeout=90)  # a rank left waiting in a collective would hang until this timeout
    assert proc.returncode != 0
    assert "loss became NaN or infinite" in proc.stderr
    assert proc.stderr.count("Traceback") == 1 and "ChildFailedError" in proc.stderr  # torchrun's report, no worker's
    r0, r1 = ranks(tmp_path)
    assert r0["iteration"] == r1["iteration"] < 22


def test_a_dead_rank_takes_the_job_down_within_seconds(tmp_path):
    proc = torchrun([*ARGS, *handler("die_on_rank", rank=1, iteration=3)], tmp_path, timeout=90)
    assert proc.returncode != 0
    assert "Signal 9 (SIGKILL)" in proc.stderr and "rank      : 1" in proc.stderr  # torchrun names the dead rank


def test_uneven_shares_train_as_one_process_would(tmp_path):
    """--batch-size 129 over 2 processes: shares of 65 and 64 samples (and 2 + 2 of the epoch's last 4). DDP averages
    the ranks' gradients, so each share's loss is weighted by its size; the convnet (no dropout) then ends where one
    process ends, up to float rounding. Unweighted, the validation loss after one epoch was 0.3927 instead of 0.4230."""
    args = ["--dataset", "digits", "--epochs", "1", "--batch-size", "129", "--no-onnx", "--no-progress-bar",
            "--wandb-mode", "disabled"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run_train(args, one, env=clean_env(one, OMP_NUM_THREADS="1"))  # one thread, as each torchrun worker: same sums
    proc = ok(torchrun(args, two))
    assert proc.stderr == ""  # no INFO lines of Ignite's launcher and auto_model around the run's own output
    a, b = checkpoint(one, "checkpoint_11.pt"), checkpoint(two, "checkpoint_11.pt")
    for key in a["model"]:
        assert torch.allclose(a["model"][key], b["model"][key], rtol=1e-3, atol=1e-5), key


def test_a_user_error_in_spawned_processes_is_one_paragraph(tmp_path):
    """--nproc-per-node: every rank finds the bad batch size; rank 0 says it once. Neither Ignite's launcher logs, nor
    torch's notes on stopping the other process, nor the parent repeating "process 0 exited with code 2" around it."""
    proc = run_train(["--dataset", "digits", "--nproc-per-node", "2", "--batch-size", "3"], tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "train.py: error: --batch-size 3 is the global batch, split across 2 processes, but the last batch of an epoch "
        "(1294 training samples) holds only 1 sample(s): some processes would get none. Choose a --batch-size whose "
        "remainder of 1294 is 0 or at least 2."]
    assert not (tmp_path / "runs").exists() and not offline_runs(tmp_path)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("launcher", ["--nproc-per-node", "torchrun"])
def test_workers_die_with_a_sigkilled_parent(tmp_path, launcher):
    """`kill -9` of the --nproc-per-node process, or of torchrun alone, must not leave its workers training on as
    orphans, writing the run's checkpoints while an --auto-resume job starts on them."""
    import signal
    import time

    start = ([sys.executable, str(ROOT / "scripts" / "train.py"), "--nproc-per-node", "2"] if launcher != "torchrun" else
             [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              str(ROOT / "scripts" / "train.py")])
    proc = subprocess.Popen(
        [*start, "--dataset", "digits", "--epochs", "200", "--no-onnx", "--no-progress-bar",
         "--output-dir", str(tmp_path / "runs")],
        cwd=tmp_path, env=clean_env(tmp_path, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs").glob("*/checkpoints/checkpoint_*.pt")):  # both workers are training
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        children = _children(proc.pid)
        assert children
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 3  # the kernel kills them at once; unfixed, they were still training after 3 s
        while (alive := [c for c in children if Path(f"/proc/{c}").exists()]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive
    finally:
        proc.kill()
        for child in children:  # orphans, if the test failed
            if Path(f"/proc/{child}").exists():
                os.kill(child, signal.SIGKILL)
