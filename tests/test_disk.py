"""Full and unwritable disks, in-process (fast tier): the checkpoint saver on a real tmpfs that fills up or is
read-only, the one warning for W&B's disk, an unwritable --output-dir refused before anything is written, and
Ignite's engine log that must not repeat our one-paragraph errors. Needs a mountable tmpfs (root); skipped with the
reason otherwise. The end-to-end runs are in test_disk_full_e2e.py."""
from __future__ import annotations

import errno
import logging
import os

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from disk_filler import fill_disk
from helpers import clean_env, tmpfs
from ignite_app import wandb_disk
from ignite_app.disk import CheckpointWriteFailed, disk_error
from ignite_app.errors import TrainingStopped, quiet_engine_logs
from ignite_app.handlers.wandb_checkpoint import WandBCheckpointSaver
from ignite_app.main import main


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def torch_save_failure() -> RuntimeError:
    """What torch.save raises on a full disk: its zip writer's RuntimeError, raised while handling the OSError."""
    try:
        try:
            raise enospc()
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 129536 vs 129428")
    except RuntimeError as exc:
        return exc


def test_disk_error_is_found_behind_torch_saves_runtime_error():
    assert disk_error(torch_save_failure()).errno == errno.ENOSPC
    assert disk_error(OSError(errno.EROFS, "Read-only file system")).errno == errno.EROFS
    assert disk_error(FileNotFoundError(errno.ENOENT, "gone")) is None  # not a disk that cannot take more
    assert disk_error(ValueError("x")) is None


def trainer_with_checkpoints(saver: WandBCheckpointSaver, weights: torch.Tensor, n_saved: int = 2):
    """A trainer that checkpoints `weights` (a real tensor, so the files have a real size) every iteration."""
    trainer = Engine(lambda engine, batch: None)
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              Checkpoint({"weights": _Holder(weights), "more": _Holder(weights[:1])}, saver, n_saved=n_saved,
                                         global_step_transform=lambda engine, _: engine.state.iteration))
    saver.trainer = trainer
    return trainer


class _Holder:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def state_dict(self) -> dict:
        return {"tensor": self.tensor}


def test_full_checkpoint_disk_is_one_error_and_keeps_the_earlier_checkpoints(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        saver = WandBCheckpointSaver(disk, None, None)
        trainer = trainer_with_checkpoints(saver, torch.zeros(20_000), n_saved=1)  # ~80 KB per file
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda _: fill_disk(disk))  # after its save
        with pytest.raises(CheckpointWriteFailed) as caught:
            trainer.run(range(10), max_epochs=1)
        message = str(caught.value)
        names = sorted(p.name for p in disk.iterdir())
        assert isinstance(caught.value, TrainingStopped)  # exit 1, printed without a traceback
        assert "checkpoint_3.pt could not be written (No space left on device)" in message, message
        assert "--auto-resume" in message, message
        # n_saved=1: Ignite prunes the old file before it writes the new one; the saver keeps it until the new one
        # is on disk, so the last good checkpoint survives the failed write; no temporary file is left behind
        assert names == ["checkpoint_2.pt", "fill"], names
        assert str(disk / "checkpoint_2.pt") in message
        assert torch.load(disk / "checkpoint_2.pt", weights_only=True)["weights"]["tensor"].shape == (20_000,)


def test_read_only_checkpoint_disk_is_one_error(tmp_path):
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as disk:
        saver = WandBCheckpointSaver(disk, None, None)
        trainer = trainer_with_checkpoints(saver, torch.zeros(10))
        with pytest.raises(CheckpointWriteFailed, match="Read-only file system.*no checkpoint of this run was written"):
            trainer.run(range(3), max_epochs=1)


def test_an_unwritable_output_dir_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in clean_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as disk:
        code = main(["--dataset", "digits", "--epochs", "1", "--no-progress-bar", "--output-dir", str(disk / "runs")])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "is not writable" in err and "Traceback" not in err, err
        assert not (tmp_path / "wandb").exists()  # no W&B run was started


def test_an_output_disk_without_room_for_one_checkpoint_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, capsys):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in clean_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    with tmpfs(tmp_path / "small", "64k") as disk:  # the digits convnet's weights alone are ~120 KB
        code = main(["--dataset", "digits", "--epochs", "1", "--no-progress-bar", "--output-dir", str(disk / "runs")])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "KB free, less than one checkpoint of this model needs (at least" in err, err
        assert "Traceback" not in err
        assert list(disk.iterdir()) == [] and not (tmp_path / "wandb").exists()  # nothing written


def test_wandb_disk_errors_warn_once_and_others_pass(capsys):
    wandb_disk.reset()
    with wandb_disk.wandb_writes():
        raise torch_save_failure()
    with wandb_disk.wandb_writes():
        raise enospc()
    with pytest.raises(ValueError):
        with wandb_disk.wandb_writes():
            raise ValueError("not a disk problem")
    err = capsys.readouterr().err
    assert err.count("W&B cannot write") == 1 and "No space left on device" in err, err
    wandb_disk.reset()  # a new run warns again
    with wandb_disk.wandb_writes():
        raise OSError(errno.EROFS, "Read-only file system")
    assert capsys.readouterr().err.count("W&B cannot write") == 1


def test_engines_do_not_repeat_our_errors(caplog):
    def stop(engine):
        raise CheckpointWriteFailed("the one paragraph")

    def crash(engine):
        raise ValueError("a bug")

    for handler, error, logged in ((stop, CheckpointWriteFailed, False), (crash, ValueError, True)):
        engine = Engine(lambda e, b: None)
        quiet_engine_logs(engine)
        engine.add_event_handler(Events.ITERATION_COMPLETED, handler)
        caplog.clear()
        with caplog.at_level(logging.ERROR), pytest.raises(error):
            engine.run(range(2), max_epochs=1)
        assert ("Engine run is terminating" in caplog.text) == logged, caplog.text


def test_test_report_on_a_full_disk_prints_and_goes_on(tmp_path):
    from ignite_app.handlers.test_report import TestReport

    with tmpfs(tmp_path / "disk", "64k") as disk:
        fill_disk(disk)
        printed: list[str] = []
        evaluator = Engine(lambda engine, batch: (torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])))
        TestReport(["a", "b"], disk, log=printed.append).attach(evaluator)
        evaluator.run([0], max_epochs=1)
        assert printed[0].startswith("Test report: accuracy 0.5000 on 2 images"), printed
        assert printed[1] == f"Test report files not written to {disk} (No space left on device).", printed
