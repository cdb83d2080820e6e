"""Checkpoints as W&B artifacts and --resume, end to end: SIGKILL a real `scripts/train.py`, resume, compare bits."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from ignite_app.state import FORMAT_VERSION
from helpers import (ROOT, assert_same_training_state, history, inspect_records, inspect_summary, offline_runs,
                     run_train, staged_checkpoints, trained_once)

pytestmark = pytest.mark.e2e

# `net` has dropout, so the RNG state matters; 11 iterations per epoch on digits; a checkpoint every 4 iterations.
# No test report (its PNG costs each of the ~30 runs here about a second of CPU; a resumed run's report is tested in
# test_images_e2e)
ARGS = ["--dataset", "digits", "--epochs", "3", "--model", "net", "--checkpoint-every", "4", "--no-progress-bar",
        "--log-interval", "2", "--no-test-report"]
KILL = str(ROOT / "tests" / "user_handlers.py") + ":kill_at"
FINAL = "checkpoint_33.pt"


def checkpoints(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "runs").glob("*/checkpoints/*.pt"))


def only(paths):
    (path,) = paths
    return path


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def artifact_records(run_dir: Path) -> list[dict]:
    """The checkpoint artifacts (the ONNX export logs its own, `onnx-<run id>`)."""
    return [r["artifact"] for r in inspect_records(run_dir)
            if r["type"] == "artifact" and r["artifact"]["name"].startswith("checkpoint-")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return trained_once(tmp_path_factory, "uninterrupted", ARGS)


def test_checkpoints_are_saved_pruned_and_logged_as_artifacts(uninterrupted):
    """--log-checkpoints best-and-last (the default), offline: the best and the last checkpoint are logged when the
    run ends, the last after the best (W&B gives each new version `latest`), from hard links under
    OUTPUT_DIR/RUN_ID/artifacts/; nothing is copied into W&B's staging directory."""
    files = {p.name for p in checkpoints(uninterrupted)}
    run_dir = only(offline_runs(uninterrupted))
    validations = [r for r in history(run_dir) if "validation/accuracy" in r]
    best = max(validations, key=lambda r: r["validation/accuracy"])  # the first of equal scores stays the best
    best_name = f"best_checkpoint_{best['_step']}_validation_accuracy={best['validation/accuracy']:.4f}.pt"
    assert files == {"checkpoint_32.pt", FINAL, best_name}  # --n-saved 2, and the best by the logged accuracy
    run_id = inspect_summary(run_dir)["run_id"]
    arts = artifact_records(run_dir)
    assert {a["name"] for a in arts} == {f"checkpoint-{run_id}"} and {a["type"] for a in arts} == {"model"}
    logged = [(a["manifest"]["contents"][0]["path"], sorted(a["aliases"])) for a in arts]
    if best["_step"] == 33:  # the last version is the best
        assert logged == [(FINAL, ["best", "epoch-3", "latest"])]
    else:
        assert logged == [(best_name, ["best", "latest"]), (FINAL, ["epoch-3", "latest"])]
    # the last "latest" is the final checkpoint, and its recorded digest is the file's md5
    from ignite_app.wandb_artifacts import md5_b64

    (entry,) = arts[-1]["manifest"]["contents"]
    final = next(p for p in checkpoints(uninterrupted) if p.name == FINAL)
    assert entry["digest"] == md5_b64(final) == md5_b64(Path(entry["local_path"]))
    assert Path(entry["local_path"]).parent == final.parent.parent / "artifacts"
    assert not staged_checkpoints(uninterrupted)


def test_checkpoint_holds_everything_needed_to_continue(uninterrupted):
    content = load(next(p for p in checkpoints(uninterrupted) if p.name == FINAL))
    assert {"model", "optimizer", "trainer", "rng", "meta", "checkpointer", "best_checkpointer"} <= set(content)
    assert content["trainer"]["iteration"] == 33 and content["meta"]["format_version"] == FORMAT_VERSION
    best = load(next(p for p in checkpoints(uninterrupted) if p.name.startswith("best_")))
    assert {"checkpointer", "best_checkpointer"} <= set(best)  # a best file continues the latest files' pruning too
    assert content["meta"]["config"]["model"] == "net" and len(content["meta"]["run_id"]) == 8
    assert {"python", "numpy", "torch"} <= set(content["rng"])


@pytest.mark.parametrize("kill_at, resumed_from", [(6, 4), (15, 12), (23, 22)])
def test_sigkill_then_auto_resume_is_bit_exact(uninterrupted, tmp_path, kill_at, resumed_from):
    crashed = run_train([*ARGS, "--handler", KILL, "--handler-arg", f"iteration={kill_at}"], tmp_path, check=False)
    assert crashed.returncode == -9
    resumed = run_train([*ARGS, "--auto-resume"], tmp_path)
    assert f"checkpoint_{resumed_from}.pt" in resumed.stdout and f"at iteration {resumed_from}" in resumed.stdout

    expected = load(next(p for p in checkpoints(uninterrupted) if p.name == FINAL))
    actual = load(next(p for p in checkpoints(tmp_path) if p.name == FINAL))
    assert_same_training_state(expected, actual)

    # same W&B run, continued on the same step axis with the same final metrics
    first, second = offline_runs(tmp_path)
    s_full = inspect_summary(only(offline_runs(uninterrupted)))["summary"]
    s_resumed = inspect_summary(second)
    assert s_resumed["run_id"] == inspect_summary(first)["run_id"] or inspect_summary(first)["state"] == "unknown"
    assert second.name.endswith(s_resumed["run_id"]) and first.name.endswith(s_resumed["run_id"])
    for key in ("test/accuracy", "test/loss", "validation/accuracy", "validation/loss"):
        assert s_resumed["summary"][key] == s_full[key], key
    steps = [row["_step"] for row in history(second)]
    assert steps == sorted(steps) and steps[0] > resumed_from
    assert "monotonically" not in resumed.stderr
    if kill_at == 15:  # the README's upload command for a resumed offline run takes both directories, in order
        from helpers import assert_wandb_sync_dry_run_takes_the_runs_in_order, clean_env

        assert_wandb_sync_dry_run_takes_the_runs_in_order(tmp_path, s_resumed["run_id"], clean_env(tmp_path))


def test_pruning_continues_after_resume_and_the_killed_runs_debris_is_removed(tmp_path):
    """Killed at 15 with --log-checkpoints none; a kill leaves artifact staging links and DiskSaver's temp files
    (placed here as they are left): `--auto-resume` removes them in one line, pruning goes on, and no checkpoint
    artifact is ever logged (the files are the resume points)."""
    args = [*ARGS, "--log-checkpoints", "none"]
    run_train([*args, "--handler", KILL, "--handler-arg", "iteration=15"], tmp_path, check=False)
    directory = only({p.parent for p in checkpoints(tmp_path)})
    os.link(directory / "checkpoint_12.pt", directory / ".upload-4242-3-checkpoint_12.pt")
    (directory / "tmpk1ll3d0x").write_bytes(b"PK\x03\x04 cut off")
    resumed = run_train([*args, "--auto-resume"], tmp_path)
    assert f"Removed 2 leftover file(s) of an interrupted process from {directory}" in resumed.stdout
    assert "at iteration 12" in resumed.stdout
    names = {p.name for p in directory.iterdir()}
    assert {n for n in names if n.startswith("checkpoint_")} == {"checkpoint_32.pt", FINAL}
    assert len([n for n in names if n.startswith("best_")]) == 1 and len(names) == 3
    assert all(not artifact_records(run) for run in offline_runs(tmp_path))
    assert not (directory.parent / "artifacts").exists() and not staged_checkpoints(tmp_path)


def test_resume_from_a_file_a_directory_and_an_offline_run(uninterrupted, tmp_path):
    # --log-checkpoints all: the version of checkpoint_4 is logged as saved (best-and-last logs at the end)
    crashed = run_train([*ARGS, "--log-checkpoints", "all", "--handler", KILL, "--handler-arg", "iteration=6",
                         "--handler-arg", "seconds=2.5"], tmp_path, check=False)
    assert crashed.returncode == -9
    run_dir = only(offline_runs(tmp_path))
    expected = load(next(p for p in checkpoints(uninterrupted) if p.name == FINAL))["model"]
    ckpt = only(checkpoints(tmp_path))
    assert not staged_checkpoints(tmp_path)
    pristine = tmp_path / "pristine"
    shutil.copytree(tmp_path / "runs", pristine)

    for spec in (str(ckpt), str(ckpt.parent.parent), str(run_dir)):
        shutil.rmtree(tmp_path / "runs")
        shutil.copytree(pristine, tmp_path / "runs")
        proc = run_train([*ARGS, "--resume", spec], tmp_path)
        assert "at iteration 4" in proc.stdout, spec
        if spec == str(run_dir):
            assert "artifact checkpoint-" in proc.stdout and "of offline run" in proc.stdout
        actual = load(next(p for p in checkpoints(tmp_path) if p.name == FINAL))["model"]
        assert_same_tensors(expected, actual)


def test_auto_resume_starts_fresh_then_a_finished_run_trains_only_the_extra_epochs(tmp_path):
    short = [a if a != "3" else "1" for a in ARGS]  # --epochs 1
    fresh = run_train([*short, "--auto-resume"], tmp_path)  # nothing to resume yet
    assert "no checkpoint of this experiment under" in fresh.stdout and "Resumed" not in fresh.stdout
    done = run_train([*short, "--auto-resume"], tmp_path)
    assert "nothing to train" in done.stdout and "Epoch 1/1" not in done.stdout
    longer = run_train([*short, "--auto-resume", "--epochs", "2"], tmp_path)
    assert "Epoch 2/2" in longer.stdout and "Epoch 1/" not in longer.stdout
    assert {p.name for p in checkpoints(tmp_path)} >= {"checkpoint_22.pt"}


SIGNAL_AT = str(ROOT / "tests" / "user_handlers.py") + ":signal_at"


def assert_same_final_state(expected_dir: Path, actual_dir: Path, wandb_validation: bool = True) -> None:
    """The final checkpoint's weights, optimizer and best validation metrics, and the test metrics of the process
    that finished the run, equal the uninterrupted run's. `wandb_validation`: the last validation metrics as W&B
    holds them too, from the newest process that logged them (one that resumed a complete run only tests); a
    process SIGKILLed after the last validation may have lost those records (W&B writes its file in the background),
    so the torture test leaves them out."""
    expected = load(next(p for p in checkpoints(expected_dir) if p.name == FINAL))
    actual = load(next(p for p in checkpoints(actual_dir) if p.name == FINAL))
    assert_same_training_state(expected, actual)
    assert expected["best_metrics"] == actual["best_metrics"]
    s_full = inspect_summary(only(offline_runs(expected_dir)))["summary"]
    runs = offline_runs(actual_dir)
    assert "test/accuracy" in inspect_summary(runs[-1])["summary"]  # the newest process finished the run
    for key in ("test/accuracy", "test/loss", *(("validation/accuracy", "validation/loss") if wandb_validation else ())):
        summaries = (inspect_summary(run)["summary"] for run in reversed(runs))  # read back only as far as needed
        assert next(s[key] for s in summaries if key in s) == s_full[key], key


# the signal arrives during iteration N's handlers, after that iteration's stop check: training stops after N + 1;
# SIGINT at 10 stops on an epoch's last iteration (11), so it waits for that epoch's validation and checkpoint
@pytest.mark.parametrize("signame, at, stopped_at", [("SIGTERM", 6, 7), ("SIGINT", 10, 11), ("SIGUSR1", 17, 18)])
def test_preemption_signal_checkpoints_exits_128_plus_signal_and_resumes_bit_exact(
        uninterrupted, tmp_path, signame, at, stopped_at):
    import signal

    stopped = run_train([*ARGS, "--handler", SIGNAL_AT, "--handler-arg", f"iteration={at}",
                         "--handler-arg", f"signame={signame}"], tmp_path, check=False)
    assert stopped.returncode == 128 + getattr(signal, signame), stopped.stderr
    assert f"Stopped by {signame} at iteration {stopped_at}" in stopped.stderr and "Traceback" not in stopped.stderr
    assert f"checkpoint_{stopped_at}.pt" in {p.name for p in checkpoints(tmp_path)}
    assert not list(tmp_path.glob("runs/*/model.onnx"))  # no end-of-training work: the resumed run does it
    summary = inspect_summary(only(offline_runs(tmp_path)))
    assert summary["summary"]["stopped"] == f"preempted ({signame})"
    # the run is marked preempting in W&B's own record (what a sweep controller reads to requeue it)
    assert [r["type"] for r in inspect_records(only(offline_runs(tmp_path)))].count("preempting") == 1
    resumed = run_train([*ARGS, "--auto-resume"], tmp_path)
    assert f"at iteration {stopped_at}" in resumed.stdout
    assert_same_final_state(uninterrupted, tmp_path)


def test_a_second_ctrl_c_exits_at_once_and_the_newest_checkpoint_still_resumes(uninterrupted, tmp_path):
    """The first SIGINT (at iteration 6) starts the preemption: finish the iteration, checkpoint, close W&B. A
    second one, sent as soon as the first is announced, lands somewhere in that work and exits at once (130), with
    no traceback; whatever it cut off, the newest checkpoint file on disk loads and --auto-resume ends bit-exact."""
    import signal
    import subprocess
    import sys

    from helpers import clean_env
    from ignite_app.resume import checkpoints_newest_first, load_checkpoint

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *ARGS, "--output-dir", str(tmp_path / "runs"),
         "--handler", SIGNAL_AT, "--handler-arg", "iteration=6", "--handler-arg", "signame=SIGINT"],
        cwd=tmp_path, env=clean_env(tmp_path), stdout=(tmp_path / "out.log").open("w"), stderr=subprocess.PIPE,
        text=True)
    try:
        err = ""
        for line in proc.stderr:
            err += line
            if "SIGINT received" in line:  # the preemption has begun: Ctrl-C again
                proc.send_signal(signal.SIGINT)
                break
        err += proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Second interrupt: exiting at once" in err, err[-3000:]
    assert "Traceback" not in err
    newest = checkpoints_newest_first(tmp_path / "runs")[0]
    assert load_checkpoint(newest, str(newest)).content["trainer"]["iteration"] in (4, 7)  # before or at the stop
    resumed = run_train([*ARGS, "--auto-resume"], tmp_path)
    assert f"Resumed from {newest}" in resumed.stdout, resumed.stdout
    assert_same_final_state(uninterrupted, tmp_path)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_during_the_test_evaluation_lets_the_finished_run_end_with_its_results(uninterrupted, tmp_path,
                                                                                      signame):
    """Training is complete then: SIGTERM's default action killed the process silently, losing the test results
    and leaving the W&B run open; SIGINT ended in `interrupted`, exit 130. Now the run finishes: exit 0, one line."""
    stopped = run_train([*ARGS, "--handler", str(ROOT / "tests" / "user_handlers.py") + ":signal_in_test",
                         "--handler-arg", f"signame={signame}"], tmp_path, check=False)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert f"{signame} received: training is complete; finishing the test evaluation" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    summary = inspect_summary(only(offline_runs(tmp_path)))["summary"]
    expected = inspect_summary(only(offline_runs(uninterrupted)))["summary"]
    assert summary["test/accuracy"] == expected["test/accuracy"] and "stopped" not in summary


def test_sigterm_from_outside_at_a_random_moment_then_auto_resume_is_bit_exact(uninterrupted, tmp_path):
    import random
    import signal
    import subprocess
    import sys
    import time

    from helpers import clean_env

    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *ARGS, "--output-dir",
                             str(tmp_path / "runs")], cwd=tmp_path, env=clean_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # training is about to start once the start-up lines are out
        if "W&B offline" in line:
            break
    time.sleep(random.uniform(0.0, 2.0))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    if proc.returncode in (0, -signal.SIGTERM):
        # the signal came after training ended: during the test evaluation or W&B's close the run finishes (0);
        # in the instants between those, the default handler kills it: the final checkpoint is complete, and
        # --auto-resume only evaluates
        if proc.returncode:
            run_train([*ARGS, "--auto-resume"], tmp_path)
        assert_same_final_state(uninterrupted, tmp_path)
        return
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Stopped by SIGTERM at iteration" in err and "Traceback" not in err
    run_train([*ARGS, "--auto-resume"], tmp_path)
    assert_same_final_state(uninterrupted, tmp_path)


def test_auto_resume_skips_a_truncated_newest_checkpoint_for_the_newest_intact_one(uninterrupted, tmp_path):
    shutil.copytree(uninterrupted / "runs", tmp_path / "runs")
    final = next(p for p in checkpoints(tmp_path) if p.name == FINAL)
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])  # cut off mid-write, as a crash leaves it
    resumed = run_train([*ARGS, "--auto-resume"], tmp_path)
    assert f"skipping {final}" in resumed.stdout and "at iteration 32" in resumed.stdout
    assert_same_tensors(load(next(p for p in checkpoints(uninterrupted) if p.name == FINAL))["model"],
                        load(next(p for p in checkpoints(tmp_path) if p.name == FINAL))["model"])


def test_every_kept_checkpoint_is_a_resume_point(uninterrupted, tmp_path):
    """Not only the newest: the older latest checkpoint and the best one both continue to the same final weights
    (the best one restores no latest-checkpointer state, and the files its run's state names may be gone), and
    pruning then keeps exactly the newest --n-saved latest files and the one best file."""
    expected = load(next(p for p in checkpoints(uninterrupted) if p.name == FINAL))["model"]
    kept = [p for p in checkpoints(uninterrupted) if p.name != FINAL]
    assert len(kept) == 2  # checkpoint_32.pt and the best one
    best_name = only(p.name for p in kept if p.name.startswith("best_"))
    for i, source in enumerate(kept):
        work = tmp_path / str(i)
        shutil.copytree(uninterrupted / "runs", work / "runs")
        copy = next(p for p in checkpoints(work) if p.name == source.name)
        (copy.parent / FINAL).unlink()  # continue from `copy` as if the newer file never existed
        done = load(copy)["trainer"]["iteration"] == 33  # the best epoch may be the last: nothing left to train
        resumed = run_train([*ARGS, "--resume", str(copy)], work)
        assert "Traceback" not in resumed.stderr and f"at iteration {load(copy)['trainer']['iteration']}" in resumed.stdout
        assert_same_tensors(expected, load(copy if done else copy.parent / FINAL)["model"])
        assert {p.name for p in checkpoints(work)} == ({"checkpoint_32.pt", best_name} if done
                                                       else {"checkpoint_32.pt", FINAL, best_name})


def test_resuming_an_older_checkpoint_after_a_middle_one_vanished_prunes_to_the_newest(uninterrupted, tmp_path):
    """--n-saved 3, 2 epochs: checkpoints 16, 20, 22 on disk. checkpoint_20 (between the resumed file and the newest)
    is deleted by hand, then the run continues from checkpoint_16 to 3 epochs: the checkpointer's restored list names
    a file that is gone and the directory holds one newer than the resumed instant; the run must neither crash on the
    missing file nor keep a stale one, and it ends on the uninterrupted run's weights."""
    args = [*ARGS, "--n-saved", "3", "--no-onnx"]
    run_train([*args, "--epochs", "2"], tmp_path)
    directory = only({p.parent for p in checkpoints(tmp_path)})
    assert {p.name for p in directory.glob("checkpoint_*.pt")} == {"checkpoint_16.pt", "checkpoint_20.pt",
                                                                   "checkpoint_22.pt"}
    (directory / "checkpoint_20.pt").unlink()
    resumed = run_train([*args, "--epochs", "3", "--resume", str(directory / "checkpoint_16.pt")], tmp_path)
    assert "Traceback" not in resumed.stderr and "at iteration 16" in resumed.stdout
    assert {p.name for p in directory.glob("checkpoint_*.pt")} == {"checkpoint_28.pt", "checkpoint_32.pt", FINAL}
    assert len(list(directory.glob("best_*.pt"))) == 1 and not list(directory.glob("tmp*"))
    assert_same_tensors(load(next(p for p in checkpoints(uninterrupted) if p.name == FINAL))["model"],
                        load(directory / FINAL)["model"])


def test_resuming_the_best_checkpoint_to_train_longer_keeps_pruning_every_latest_file(uninterrupted, tmp_path):
    """The best file holds the latest checkpointer's state from before that epoch's latest file was written: resumed
    with a larger --epochs, that latest file (on disk beside it, as the run left it) was on no list and stayed
    forever beside the --n-saved newer ones. The list now comes from the directory."""
    shutil.copytree(uninterrupted / "runs", tmp_path / "runs")
    best = only([p for p in checkpoints(tmp_path) if p.name.startswith("best")])
    iteration = load(best)["trainer"]["iteration"]
    resumed = run_train([*ARGS, "--epochs", "4", "--resume", str(best), "--no-onnx", "--no-test-report"], tmp_path)
    assert f"at iteration {iteration}" in resumed.stdout
    assert {p.name for p in checkpoints(tmp_path) if not p.name.startswith("best")} == {"checkpoint_40.pt",
                                                                                       "checkpoint_44.pt"}


def test_two_processes_resuming_one_run_the_second_gets_exit_2_naming_the_holder(uninterrupted, tmp_path):
    """One process trains a run at a time: the run directory's lock (filelock's flock, released by the kernel when
    the holder dies, so a killed run's lock never blocks) stops a second resume before it writes anything."""
    import subprocess
    import sys

    from helpers import clean_env

    shutil.copytree(uninterrupted / "runs", tmp_path / "runs")
    args = [*ARGS, "--epochs", "40", "--auto-resume", "--output-dir", str(tmp_path / "runs")]
    first = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=tmp_path,
                             env=clean_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in first.stdout:  # the first holds the lock once its start-up lines are out
        if "W&B offline" in line:
            break
    second = run_train(args, tmp_path, check=False)
    assert second.returncode == 2 and "is being trained by process" in second.stderr, second.stderr
    assert str(first.pid) in second.stderr and "--wait-for-lock" in second.stderr
    assert "Traceback" not in second.stderr and len(offline_runs(tmp_path)) == 1  # no second W&B run
    first.kill()  # SIGKILL: the kernel drops its lock
    first.wait()
    waited = run_train([*ARGS, "--epochs", "4", "--auto-resume", "--wait-for-lock"], tmp_path)
    assert "Traceback" not in waited.stderr and "Resumed from" in waited.stdout  # a killed holder's lock never blocks


def test_a_process_that_waited_for_the_lock_resumes_the_holders_newest_checkpoint(tmp_path):
    """`--wait-for-lock --auto-resume` beside a live run: it decided what to resume before it waited, so once the
    holder finished it resumed the checkpoint that was newest when it started (12, not 33) and logged to W&B at steps
    the holder had logged. Now it decides after the wait: it continues from the holder's final checkpoint."""
    import subprocess
    import sys
    import time

    from helpers import clean_env

    gate = tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *ARGS, "--output-dir", str(tmp_path / "runs"),
         "--handler", str(ROOT / "tests" / "user_handlers.py") + ":pause_at", "--handler-arg", "iteration=12",
         "--handler-arg", f"until={gate}"],
        cwd=tmp_path, env=clean_env(tmp_path), stdout=(tmp_path / "holder.log").open("w"), stderr=subprocess.STDOUT)
    waiter, line = None, ""
    try:
        deadline = time.monotonic() + 120
        while not any(p.name == "checkpoint_12.pt" for p in checkpoints(tmp_path)):  # the holder paused at 12
            assert holder.poll() is None and time.monotonic() < deadline, (tmp_path / "holder.log").read_text()[-3000:]
            time.sleep(0.1)
        waiter = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train.py"), *ARGS, "--epochs", "4", "--auto-resume",
             "--wait-for-lock", "--output-dir", str(tmp_path / "runs")],
            cwd=tmp_path, env=clean_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in waiter.stdout:  # it found the run (at checkpoint 12) and waits for the holder
            if "Waiting for process" in line:
                break
        assert str(holder.pid) in line and waiter.poll() is None, line
        gate.touch()  # the holder trains on to 33 and ends; then the waiter gets the lock
        assert holder.wait(timeout=300) == 0, (tmp_path / "holder.log").read_text()[-3000:]
        out, err = waiter.communicate(timeout=300)
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert waiter.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert "at iteration 33" in out and "at iteration 12" not in out, out
    assert "is free; deciding again what to resume" in out
    assert {p.name for p in checkpoints(tmp_path) if p.name.startswith("checkpoint_")} == {"checkpoint_40.pt",
                                                                                       "checkpoint_44.pt"}
    assert load(only(p for p in checkpoints(tmp_path) if p.name == "checkpoint_44.pt"))["trainer"]["iteration"] == 44
    first, second = offline_runs(tmp_path)  # one W&B run in two directories; the second continues after step 33
    assert inspect_summary(first)["run_id"] == inspect_summary(second)["run_id"]
    steps = [row["_step"] for row in history(second)]
    assert steps and min(steps) > 33 and steps == sorted(steps)


def test_torture_nine_sigkills_at_random_instants_then_the_run_ends_bit_exact(uninterrupted, tmp_path):
    """SIGKILL a run with --checkpoint-every 1 nine times in a row at random instants (tests/torture_driver.py):
    timed from the process start (resume decision, lock, data, W&B's start, debris cleanup, restore), 0-60 ms after
    a fresh checkpoint (mid-iteration, mid-torch.save, mid-prune, mid-artifact staging), and once training is complete
    (test evaluation, last artifact versions, W&B's close), rerunning with --auto-resume each time; the
    last attempt finishes, and its final weights, optimizer state and metrics equal an uninterrupted run's. The seed
    is random (TORTURE_SEED=N repeats one) and printed with each kill's phase."""
    import subprocess
    import sys

    from helpers import clean_env

    seed = [os.environ["TORTURE_SEED"]] if os.environ.get("TORTURE_SEED") else []
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "torture_driver.py"), str(tmp_path / "runs"), "9", "33", *seed, "--",
         *ARGS, "--checkpoint-every", "1", "--log-checkpoints", "all", "--no-onnx"],
        cwd=tmp_path, env=clean_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    print(out.stderr[-500:], out.stdout)  # the seed and the kills' phases, shown by pytest on a failure (or -s)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    log = (tmp_path / "runs.log").read_text()
    assert report["kills"] == 9 and report.get("exit_code") == 0, (report, log[-3000:])
    assert "Traceback" not in log, (report["seed"], log[-3000:])
    assert {r["kind"] for r in report["rounds"]} == {"start", "checkpoint", "end"}, report
    assert_same_final_state(uninterrupted, tmp_path, wandb_validation=False)
    # no debris once the last attempt ended, and no copy of any of the 33+ versions in W&B's staging directory
    directory = only({p.parent for p in checkpoints(tmp_path)})
    assert not list(directory.glob(".upload-*")) and not list(directory.glob("tmp*"))
    assert not staged_checkpoints(tmp_path)


def test_auto_resume_continues_only_the_same_experiment(uninterrupted, tmp_path):
    """Two experiments in one output dir: --auto-resume with another seed and lr does not continue (or rewrite) the
    other run; it says why that run is not this experiment and starts a new one. `--epochs` may change."""
    shutil.copytree(uninterrupted / "runs", tmp_path / "runs")
    (other,) = (tmp_path / "runs").iterdir()
    config_before = (other / "config.yaml").read_text()
    proc = run_train([*ARGS, "--seed", "7", "--lr", "0.001", "--epochs", "1", "--auto-resume"], tmp_path)
    assert f"{other.name}: lr (0.005 vs 0.001), seed (42 vs 7)" in proc.stdout and "Resumed" not in proc.stdout
    assert (other / "config.yaml").read_text() == config_before and len(list((tmp_path / "runs").iterdir())) == 2
    longer = run_train([*ARGS, "--epochs", "4", "--auto-resume"], tmp_path)  # the first experiment, trained longer
    assert f"W&B run {other.name}" in longer.stdout and "at iteration 33" in longer.stdout


def test_run_id_and_wandb_name_pick_the_run_to_continue_not_recency(uninterrupted, tmp_path):
    """`--run-id ID --auto-resume` continues that run although a newer run of the same experiment exists; a given
    id that already has checkpoints is not started again (exit 2, nothing written); `--wandb-name` picks the run of
    that name among this experiment's runs."""
    from ignite_app.cli import parse
    from ignite_app.resume import find_auto_resume

    runs = tmp_path / "runs"
    shutil.copytree(uninterrupted / "runs", runs)
    (first,) = runs.iterdir()
    run_train([*ARGS, "--epochs", "1", "--run-id", "second", "--wandb-name", "b"], tmp_path)  # newer, same experiment
    before = {str(p): p.stat().st_mtime_ns for p in runs.rglob("*")}
    again = run_train([*ARGS, "--epochs", "1", "--run-id", "second"], tmp_path, check=False)
    assert again.returncode == 2 and "already has checkpoints" in again.stderr and "Traceback" not in again.stderr
    assert {str(p): p.stat().st_mtime_ns for p in runs.rglob("*")} == before
    longer = run_train([*ARGS, "--epochs", "4", "--auto-resume", "--run-id", first.name], tmp_path)
    assert f"W&B run {first.name}" in longer.stdout and "at iteration 33" in longer.stdout
    # `first` now holds the newest checkpoint of this experiment; the name picks `second`
    named = find_auto_resume(str(runs), None, parse([*ARGS, "--wandb-name", "b"]).to_dict(), warn=print)
    assert named is not None and named.path.parent.parent.name == "second"
    warnings: list[str] = []
    assert find_auto_resume(str(runs), None, parse([*ARGS, "--wandb-name", "nobody"]).to_dict(),
                            warn=warnings.append) is None
    assert "named 'nobody'" in warnings[0] and "second 'b'" in warnings[0]
