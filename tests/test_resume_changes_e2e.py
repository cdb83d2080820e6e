"""Resuming with settings that change what an epoch is (issue 9): another --batch-size continues from the start of
the interrupted epoch at the new length with a warning, or is refused when the iteration count would go backwards;
another --dataset is refused. A refused resume writes nothing. And what a resume adds or drops (--early-stopping,
--lr-schedule) is said in one line."""
import shutil

import pytest
import torch

from helpers import ROOT, history, inspect_summary, offline_runs, run_train

pytestmark = pytest.mark.e2e
USER = str(ROOT / "tests" / "user_handlers.py")
# digits: 1294 training images, so 21 iterations per epoch at batch 64 and 41 at batch 32
ARGS = ["--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--no-progress-bar", "--log-interval", "1",
        "--no-onnx", "--no-test-report", "--checkpoint-every", "5"]


@pytest.fixture(scope="module")
def killed_mid_epoch_2(tmp_path_factory):
    """A run SIGKILLed at iteration 30 (9 iterations into epoch 2), right after its checkpoint_30.pt."""
    tmp_path = tmp_path_factory.mktemp("killed")
    proc = run_train([*ARGS, "--handler", f"{USER}:kill_at", "--handler-arg", "iteration=30"], tmp_path, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    return tmp_path


def copy_of(source, tmp_path):
    for name in ("runs", "wandb"):
        shutil.copytree(source / name, tmp_path / name)
    (checkpoint,) = (tmp_path / "runs").glob("*/checkpoints/checkpoint_30.pt")
    return checkpoint


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_a_smaller_batch_restarts_the_interrupted_epoch_at_the_new_length(killed_mid_epoch_2, tmp_path):
    checkpoint = copy_of(killed_mid_epoch_2, tmp_path)
    proc = run_train(["--resume", str(checkpoint), "--batch-size", "32", "--early-stopping", "3", "--lr-schedule", "step",
                      "--lr-step-epochs", "1", "--lr-gamma", "0.5"], tmp_path)
    out = proc.stdout
    assert "Warning: epoch length 21 -> 41 iterations (--batch-size 64 -> 32)" in out
    assert "continues from the start of epoch 2 at iteration 41 (was 30)" in out and "no longer bit-exact" in out
    assert "early_stopping starts fresh (the checkpoint has no state for it: --early-stopping was off)" in out
    assert ("lr_scheduler starts fresh (the checkpoint has no state for it: --lr-schedule/--warmup-iters was off; "
            "it continues as these settings have it at iteration 41)") in out
    assert "at iteration 41 (after epoch 1)" in out and "Epoch 2/2" in out and "Epoch 1/2" not in out
    final = torch.load(checkpoint.parent / "checkpoint_82.pt", weights_only=True)  # epoch 2 of 41 iterations
    assert final["trainer"]["iteration"] == 82 and final["trainer"]["epoch_length"] == 41
    assert final["meta"]["config"]["batch_size"] == 32 and "early_stopping" in final
    # pruning went on, the resumed checkpoint_30.pt included: the newest --n-saved 2 are left
    assert sorted(p.name for p in checkpoint.parent.glob("checkpoint_*.pt")) == ["checkpoint_80.pt", "checkpoint_82.pt"]
    killed, resumed = offline_runs(tmp_path)
    steps = [r["_step"] for run in (killed, resumed) for r in history(run) if "training/loss" in r]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one step axis, never backwards
    assert [s for s in steps if s > 30] == list(range(42, 83))  # epoch 2 again, all 41 iterations of it
    # the step schedule added on resume stands where it would in epoch 2 at the new length: one halving
    assert {r["lr/group_0"] for r in history(resumed) if "lr/group_0" in r} == {0.0025}
    assert inspect_summary(resumed)["summary"]["trainer/epoch"] == 2


@pytest.mark.parametrize("args, message", [
    (["--dataset", "fashion-mnist"], "was trained on --dataset digits, and this command asks for --dataset "
                                     "fashion-mnist: a resume continues the same run on the same data"),
    (["--batch-size", "128"], "epoch length 21 -> 11 iterations (--batch-size 64 -> 128). The run would continue "
                              "from the start of epoch 2, iteration 11, but the checkpoint is at iteration 30"),
])
def test_another_dataset_or_a_shorter_epoch_is_refused_and_nothing_is_written(killed_mid_epoch_2, tmp_path, args,
                                                                               message):
    checkpoint = copy_of(killed_mid_epoch_2, tmp_path)
    before = snapshot(tmp_path)
    proc = run_train(["--resume", str(checkpoint), *args], tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert snapshot(tmp_path) == before  # the run directory and the W&B directory are as they were
