"""Two real processes under torchrun (gloo, the CPU): one run, equal metrics on every rank, a SIGKILLed job resumed
bit-exactly under torchrun and in one process, a NaN on one rank and a dead rank stopping the whole job."""
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, assert_same_training_state, clean_env, history, inspect_summary, offline_runs, run_train

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
    # rank 1 wrote nothing of its own: no second W&B run, log or directory besides the test's rank files
    assert sorted(p.name for p in uninterrupted.iterdir()) == [
        "rank0.json", "rank1.json", "runs", "wandb", "wandb-data"]  # wandb-data: W&B's data dir (clean_env)
    assert sorted(p.name for p in (uninterrupted / "wandb").iterdir()) == sorted(
        ["debug-internal.log", "debug.log", "latest-run", run_dir.name])
    r0, r1 = ranks(uninterrupted)
    assert r0["world_size"] == r1["world_size"] == 2 and r0["iteration"] == r1["iteration"] == 22
    assert r0["validation"] == r1["validation"] and r0["test"] == r1["test"]
    assert summary["summary"]["test/accuracy"] == r0["test"]["accuracy"] > 0.8
    # every rank's handlers see the same loss, the mean over ranks, and that is what W&B logged (--log-interval 2)
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 22
    logged = {row["_step"]: row["training/loss"] for row in history(run_dir) if "training/loss" in row}
    assert logged and all(logged[step] == pytest.approx(r0["losses"][step - 1], rel=1e-6) for step in logged)
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


def test_two_process_checkpoint_continues_in_one_process_and_back_in_two(crashed, tmp_path):
    shutil.copytree(crashed / "pristine-runs", tmp_path / "runs")
    (ckpt,) = (tmp_path / "runs").glob("*/checkpoints/checkpoint_4.pt")
    proc = run_train([*ARGS, "--resume", str(ckpt)], tmp_path, env=clean_env(tmp_path, OMP_NUM_THREADS="1"))
    assert "at iteration 4" in proc.stdout
    assert "written by 2 process(es) and continues in 1" in proc.stdout and "no longer bit-exact" in proc.stdout
    assert checkpoint(tmp_path)["trainer"]["iteration"] == 22
    # and the other way round: the 1-process continuation's checkpoint of iteration 20 continues in 2 processes
    (ckpt,) = (tmp_path / "runs").glob("*/checkpoints/checkpoint_20.pt")
    assert "ranks" not in torch.load(ckpt, map_location="cpu", weights_only=True)["rng"]  # one process wrote it
    proc = ok(torchrun([*ARGS, "--resume", str(ckpt)], tmp_path))
    assert "at iteration 20" in proc.stdout
    assert "written by 1 process(es) and continues in 2" in proc.stdout and "no longer bit-exact" in proc.stdout
    final = checkpoint(tmp_path)
    assert final["trainer"]["iteration"] == 22 and final["rng"]["world_size"] == 2


def test_nan_on_one_rank_stops_every_rank_at_the_same_iteration(tmp_path):
    """Spawned by --nproc-per-node this time (idist.Parallel with nproc_per_node): the launcher-free path."""
    proc = run_train([*ARGS, "--nproc-per-node", "2", *handler("nan_on_rank", rank=1, iteration=3),
                      *handler("record_rank", directory=tmp_path)], tmp_path, check=False, timeout=90,
                     env=clean_env(tmp_path, OMP_NUM_THREADS="1"))  # a rank left waiting would hang until the timeout
    assert proc.returncode == 1
    assert proc.stderr.count("loss became NaN or infinite") == 1 and "Traceback" not in proc.stderr  # rank 0 speaks
    assert "process 0 of 2 exited with code 1" in proc.stderr or "process 1 of 2 exited with code 1" in proc.stderr
    r0, r1 = ranks(tmp_path)
    assert r0["iteration"] == r1["iteration"] < 22


def srun(args, tmp_path: Path, ntasks: int = 2) -> list[subprocess.CompletedProcess]:
    """What `srun --ntasks N python scripts/train.py ...` starts on one node: N processes with Slurm's variables
    (Ignite derives the rendezvous from them: MASTER_ADDR from the node list, MASTER_PORT 15000 + the job id's last
    4 digits)."""
    for _ in range(100):
        port = random.randrange(15000, 25000)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
    slurm = dict(SLURM_JOB_ID=f"9{port - 15000:04d}", SLURM_STEP_ID="0", SLURM_NTASKS=str(ntasks),
                 SLURM_JOB_NODELIST="localhost", SLURM_JOB_NUM_NODES="1", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args, "--output-dir",
                               str(tmp_path / "runs")], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=clean_env(tmp_path, SLURM_PROCID=str(r), SLURM_LOCALID=str(r), **slurm))
             for r in range(ntasks)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def test_srun_tasks_train_as_one_run(tmp_path):
    tasks = srun([*ARGS, "--epochs", "1", *handler("record_rank", directory=tmp_path)], tmp_path)
    for task in tasks:
        ok(task)
    assert "2 processes (gloo)" in tasks[0].stdout and "Run " not in tasks[1].stdout  # rank 0 speaks for both
    assert len(offline_runs(tmp_path)) == 1 and len(list((tmp_path / "runs").iterdir())) == 1
    r0, r1 = ranks(tmp_path)
    assert r0["world_size"] == 2 and r0["test"] == r1["test"] and r0["iteration"] == 11


@pytest.mark.parametrize("failure", ["die_on_rank", "fail_on_rank"])
def test_a_dead_or_failing_rank_takes_the_job_down(tmp_path, failure):
    """SIGKILL of one rank, or an exception in a handler on one rank: its peer's next collective fails at once, it says
    why and exits, and torchrun names the rank (a rank left waiting would hang until the timeout)."""
    proc = torchrun([*ARGS, *handler(failure, rank=1, iteration=3)], tmp_path, timeout=90)
    assert proc.returncode != 0
    assert "rank      : 1" in proc.stderr  # torchrun's report names the failed rank
    # rank 0 either notices first (its message) or is stopped by torchrun first (SIGTERM): both end the job
    assert "rank 0 of 2 lost contact" in proc.stderr or "Signal 15 (SIGTERM)" in proc.stderr
    if failure == "die_on_rank":
        assert "Signal 9 (SIGKILL)" in proc.stderr
    else:
        assert "ValueError: a user handler failed on rank 1" in proc.stderr


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


def start_long_job(start: list[str], tmp_path: Path) -> subprocess.Popen:
    """A 2-process job of 200 epochs, once its first checkpoint is written (both workers are training)."""
    import time

    proc = subprocess.Popen(
        [*start, *ARGS, "--epochs", "200", "--output-dir", str(tmp_path / "runs")],
        cwd=tmp_path, env=clean_env(tmp_path, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "runs").glob("*/checkpoints/checkpoint_*.pt")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the job ended ({proc.returncode}) or wrote no checkpoint in 120 s")
        time.sleep(0.1)
    return proc


def assert_workers_die_with_sigkilled(proc: subprocess.Popen) -> None:
    """`kill -9` of the launcher alone must not leave its workers training on as orphans, writing the run's
    checkpoints while an --auto-resume job starts on them."""
    import signal
    import time

    children = _children(proc.pid)
    try:
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


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(ROOT / "scripts" / "train.py")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_sigkilled_nproc_per_node_parent(tmp_path):
    """--nproc-per-node (idist.Parallel spawns the workers); torchrun's case is in the test after the next."""
    job = start_long_job([sys.executable, str(ROOT / "scripts" / "train.py"), "--nproc-per-node", "2"], tmp_path)
    assert_workers_die_with_sigkilled(job)


def test_sigterm_to_torchrun_checkpoints_and_auto_resumes_bit_exactly(uninterrupted, tmp_path):
    """What a scheduler's preemption does to a torchrun job: SIGTERM to the launcher, which forwards it to its workers.
    Every rank stops at the same iteration and a checkpoint of that instant is written before torchrun gives up on
    them (its workers die with it, PR_SET_PDEATHSIG); `--auto-resume` under torchrun then ends bit-exactly."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "scripts" / "train.py"), *ARGS, "--output-dir", str(tmp_path / "runs")],
        cwd=tmp_path, env=clean_env(tmp_path, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs").glob("*/checkpoints/checkpoint_4.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "SIGTERM received" in err, err[-3000:]
    stopped = max(int(p.stem.split("_")[1]) for p in (tmp_path / "runs").glob("*/checkpoints/checkpoint_*.pt"))
    assert 4 <= stopped < 22  # the stop instant (past 4 unless the signal came during iteration 4's handlers)
    resumed = ok(torchrun([*ARGS, "--auto-resume"], tmp_path))
    assert f"at iteration {stopped}" in resumed.stdout
    assert_same_training_state(checkpoint(uninterrupted), checkpoint(tmp_path))
    assert len(list((tmp_path / "runs").iterdir())) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_second_torchrun_job_on_a_running_run_is_refused_and_a_sigkilled_torchrun_takes_its_workers(tmp_path):
    """torchrun --auto-resume while another torchrun job trains the run: rank 0 finds the run lock held and every rank
    stops with its message and exit 2 (rank 0's error reaches the others; it was a gloo abort before). The first job
    trains on; then `kill -9` of its torchrun alone takes its workers down with it (PR_SET_PDEATHSIG)."""
    first = start_long_job(TORCHRUN, tmp_path)
    try:
        second = torchrun([*ARGS, "--epochs", "200", "--auto-resume"], tmp_path, timeout=120)
        assert second.returncode != 0 and "is being trained by process" in second.stderr, second.stderr[-3000:]
        assert "exitcode  : 2" in second.stderr and "gloo::EnforceNotMet" not in second.stderr
        assert first.poll() is None  # the first job trains on
    except BaseException:
        first.kill()
        raise
    assert_workers_die_with_sigkilled(first)


def test_ctrl_c_while_spawned_processes_wait_for_the_lock_is_reported_as_the_stop(tmp_path):
    """Ctrl-C reaches every process of a --nproc-per-node job waiting for a run's lock (--wait-for-lock): rank 1 left
    at once, and rank 0's broadcast of its stop to it failed, so rank 0 reported "lost contact with the other
    processes" instead of the stop. The stop is the message, exit 130."""
    run_dir = tmp_path / "runs" / "lockedrun"
    run_dir.mkdir(parents=True)
    hold = "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run_dir / ".lock")], stdout=subprocess.PIPE, text=True)
    job = None
    try:
        assert holder.stdout.readline().strip() == "held"
        job = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train.py"), "--dataset", "digits", "--nproc-per-node", "2",
             "--run-id", "lockedrun", "--auto-resume", "--wait-for-lock", "--no-onnx", "--output-dir", str(tmp_path / "runs")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(tmp_path), start_new_session=True)
        line = job.stdout.readline()
        while line and "Waiting for" not in line:
            line = job.stdout.readline()
        assert "Waiting for" in line
        os.killpg(job.pid, 2)  # the terminal's Ctrl-C: the whole process group
        _, err = job.communicate(timeout=120)
        assert job.returncode == 130, err
        assert "Stopped by SIGINT during start-up" in err and "lost contact" not in err, err
    finally:
        for process in (holder, job):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, 9) if process is job else process.kill()
                process.wait()
