"""WandBCheckpointSaver and ArtifactUploader with Ignite's Checkpoint, a tiny Engine and a real offline W&B run whose
records are read back with `wandb leet inspect --json` (what `--resume wandb/offline-run-...` reads)."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from ignite_app import wandb_artifacts
from ignite_app.handlers.wandb_checkpoint import KEPT_DIR, ArtifactUploader, WandBCheckpointSaver, clean_debris
from ignite_app.resume import checkpoints_newest_first
from ignite_app.wandb_artifacts import md5_b64

EPOCH_LENGTH = 3
# validation accuracy after each epoch: the best is epoch 4 (iteration 12), the last epoch is not the best
SCORES = (0.2, 0.5, 0.4, 0.8, 0.3, 0.6)
# a write that fails halfway: pickle finds no module attribute named `<lambda>` (PicklingError on every Python 3;
# a local lambda's error type changed, AttributeError before 3.14)
UNPICKLABLE = lambda: None  # noqa: E731


def _checkpointer(directory, trainer, model) -> Checkpoint:
    return Checkpoint({"model": model, "trainer": trainer}, WandBCheckpointSaver(directory, trainer), n_saved=2,
                      global_step_transform=lambda engine, _: engine.state.iteration, include_self=True)


def test_a_run_resumed_from_an_older_checkpoint_prunes_files_already_gone(tmp_path):
    """n_saved 2: the run went on to checkpoint_3 and pruned checkpoint_1. Resumed from checkpoint_2, the restored
    Checkpoint still lists checkpoint_1; its next save must prune it quietly, not stop training with
    FileNotFoundError (what `--resume .../checkpoint_42.pt` did when checkpoint_63.pt existed)."""
    model = torch.nn.Linear(2, 2)
    trainer = Engine(lambda engine, batch: 0.0)
    first = _checkpointer(tmp_path, trainer, model)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, first)
    trainer.run([0, 0, 0], max_epochs=1)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_2.pt", "checkpoint_3.pt"]

    resumed_trainer = Engine(lambda engine, batch: 0.0)
    resumed = _checkpointer(tmp_path, resumed_trainer, model)
    content = torch.load(tmp_path / "checkpoint_2.pt", weights_only=True)
    Checkpoint.load_objects({"trainer": resumed_trainer, "checkpointer": resumed}, content)
    resumed_trainer.add_event_handler(Events.ITERATION_COMPLETED, resumed)
    resumed_trainer.run([0, 0, 0], max_epochs=2)  # continues at iteration 3: saves 3 (pruning 1, gone), 4, ...
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_5.pt", "checkpoint_6.pt"]


def test_saving_the_same_step_again_keeps_the_file(tmp_path):
    """Checkpoint removes a file it saves again under the same name (the same step, e.g. a checkpoint asked for twice
    at one iteration) before writing it; the saver prunes after the write, so that must not delete the new file."""
    model = torch.nn.Linear(2, 2)
    trainer = Engine(lambda engine, batch: 0.0)
    checkpointer = _checkpointer(tmp_path, trainer, model)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpointer)
    trainer.run([0, 0], max_epochs=1)
    checkpointer(trainer)  # iteration 2 again
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_1.pt", "checkpoint_2.pt"]


def test_a_failed_write_leaves_no_partial_file_and_the_earlier_checkpoints_intact(tmp_path):
    """Atomic writes: torch.save goes to a temp file that replaces the target only when complete."""
    model = torch.nn.Linear(2, 2)
    trainer = Engine(lambda engine, batch: 0.0)
    saver = WandBCheckpointSaver(tmp_path, trainer)
    saver({"model": model.state_dict()}, "checkpoint_1.pt")
    before = (tmp_path / "checkpoint_1.pt").read_bytes()
    with pytest.raises(pickle.PicklingError, match="Can't pickle <function <lambda>"):
        saver({"model": model.state_dict(), "unpicklable": UNPICKLABLE}, "checkpoint_1.pt")
    with pytest.raises(pickle.PicklingError, match="Can't pickle <function <lambda>"):
        saver({"unpicklable": UNPICKLABLE}, "checkpoint_2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1.pt"]  # no tmp*, no checkpoint_2.pt
    assert (tmp_path / "checkpoint_1.pt").read_bytes() == before


# ---------------------------------------------------------------- W&B artifact versions (a real offline run)


@pytest.fixture
def offline_run(tmp_path, monkeypatch):
    """A real offline W&B run writing under tmp_path; W&B's data dir (artifact staging) is tmp_path/wandb-data."""
    import wandb

    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="ignite-app-tests",
                     config={"output_dir": str(tmp_path / "runs"), "log_checkpoints": "best-and-last"}, settings=wandb.Settings(silent=True))
    yield run
    run.finish()


class FirstUploadSlow(ArtifactUploader):
    """The first version takes half a second longer to log than the others, as a large file's hashing would: were
    versions logged concurrently (or out of save order), a later one would reach W&B before it, and W&B's `latest`,
    which moves to each version as it is logged, would end on an older checkpoint."""

    def _log(self, *args, **kwargs):
        if not getattr(self, "_slowed", False):
            self._slowed = True
            time.sleep(0.5)
        return super()._log(*args, **kwargs)


def _train(run, run_dir: Path, mode: str, warnings: list[str] | None = None, epochs: int = len(SCORES),
           uploader_class: type = ArtifactUploader):
    """Checkpoint a tiny Engine as the app does: every iteration a latest-checkpoint (n_saved 2); at each epoch's end
    first the best Checkpoint by a validation score, then the epoch's latest-checkpoint. Returns what close needs."""
    model = torch.nn.Linear(2, 2)
    trainer = Engine(lambda engine, batch: float(engine.state.iteration))
    uploader = uploader_class(run, run_dir, mode=mode, warn=(warnings.append if warnings is not None else print))
    directory = run_dir / "checkpoints"
    step = lambda engine, _: engine.state.iteration  # noqa: E731
    best = Checkpoint({"model": model, "trainer": trainer}, WandBCheckpointSaver(directory, trainer, uploader, best=True),
                      filename_prefix="best", score_function=lambda engine: SCORES[engine.state.epoch - 1],
                      score_name="validation_accuracy", n_saved=1, global_step_transform=step)
    latest = Checkpoint({"model": model, "trainer": trainer, "best_checkpointer": best},
                        WandBCheckpointSaver(directory, trainer, uploader), n_saved=2, global_step_transform=step,
                        include_self=True)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, best)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, latest)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(event_filter=lambda engine, i: i % engine.state.epoch_length != 0), latest)
    trainer.run([0] * EPOCH_LENGTH, max_epochs=epochs)
    return uploader, best


def _versions(run) -> tuple[Path, list[dict]]:
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir, wandb_artifacts.checkpoint_artifacts(wandb_artifacts.offline_run_records(run_dir))


def _staged_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "wandb-data").rglob("*") if p.is_file()]


def test_one_uploader_logs_every_version_in_save_order_latest_is_the_newest_and_best_the_best(offline_run, tmp_path):
    """--log-checkpoints all, 18 saves interleaved with 6 best-checkpoint saves: one version per latest-checkpoint,
    in save order (close drained the queue); `latest` names the newest, `best` the one at the best score's
    iteration; no best-checkpoint file becomes a version (W&B gives every new version `latest`), even when the first
    version is slow to log (`FirstUploadSlow`). The offline run's versions resume through the digest-checked files
    under artifacts/, though pruning removed most checkpoints."""
    uploader, best = _train(offline_run, tmp_path / "runs" / offline_run.id, "all", uploader_class=FirstUploadSlow)
    uploader.close(Path(best.last_checkpoint))
    run_dir, versions = _versions(offline_run)

    iterations = [int(v["manifest"]["contents"][0]["path"].removeprefix("checkpoint_").removesuffix(".pt"))
                  for v in versions]
    assert iterations == list(range(1, EPOCH_LENGTH * len(SCORES) + 1))
    assert all("latest" in v["aliases"] for v in versions)
    # each new best score's version claims `best` (W&B moves an alias to the newest version that claims it)
    assert [sorted(v["aliases"]) for v in versions if "best" in v["aliases"]] == [
        ["best", f"epoch-{epoch}", "latest"] for epoch in (1, 2, 4)]
    assert sorted(versions[-1]["aliases"]) == ["epoch-6", "latest"]
    assert sorted(versions[0]["aliases"]) == ["iter-1", "latest"]

    for alias, iteration in (("latest", 18), ("best", 12)):
        path, origin = wandb_artifacts.checkpoint_from_offline_run(run_dir, alias)
        assert path.parent.name == KEPT_DIR and torch.load(path, weights_only=True)["trainer"]["iteration"] == iteration
    assert not _staged_files(tmp_path)  # nothing copied into W&B's staging directory
    kept = sorted((tmp_path / "runs" / offline_run.id / KEPT_DIR).iterdir())
    assert len(kept) == 18 and not list((tmp_path / "runs" / offline_run.id / "checkpoints").glob(".upload-*"))
    # --auto-resume and --resume DIR see the checkpoints/ files only, not the artifacts' links
    assert {p.parent.name for p in checkpoints_newest_first(tmp_path / "runs")} == {"checkpoints"}


def test_best_and_last_offline_logs_the_best_and_the_last_version_at_close(offline_run, tmp_path):
    """Offline, a superseded version would stay on disk until `wandb sync`: best-and-last logs nothing while
    training, then the best Checkpoint's file (`best`) and, after it, the last checkpoint (`latest`), also when the
    best one is slow to log."""
    run_dir_of_run = tmp_path / "runs" / offline_run.id
    uploader, best = _train(offline_run, run_dir_of_run, "best-and-last", uploader_class=FirstUploadSlow)
    assert not (run_dir_of_run / KEPT_DIR).exists()  # nothing logged yet
    uploader.close(Path(best.last_checkpoint))
    run_dir, versions = _versions(offline_run)

    assert [(v["manifest"]["contents"][0]["path"], sorted(v["aliases"])) for v in versions] == [
        # W&B adds `latest` to every version it logs: the last one logged keeps it
        (Path(best.last_checkpoint).name, ["best", "latest"]), ("checkpoint_18.pt", ["epoch-6", "latest"])]
    latest, _ = wandb_artifacts.checkpoint_from_offline_run(run_dir, "latest")
    best_path, _ = wandb_artifacts.checkpoint_from_offline_run(run_dir, "best")
    assert torch.load(latest, weights_only=True)["trainer"]["iteration"] == 18
    assert md5_b64(best_path) == md5_b64(Path(best.last_checkpoint))
    assert len(list((run_dir_of_run / KEPT_DIR).iterdir())) == 2 and not _staged_files(tmp_path)


def test_best_and_last_offline_run_killed_before_its_end_resumes_from_its_run_directory(offline_run, tmp_path):
    """A killed offline best-and-last run logged no versions: `--resume wandb/offline-run-...` takes the newest
    (or the best) checkpoint of that run's directory, and says so."""
    run_dir_of_run = tmp_path / "runs" / offline_run.id
    _, best = _train(offline_run, run_dir_of_run, "best-and-last", epochs=2)  # never closed: as if killed
    run_dir, versions = _versions(offline_run)
    assert versions == []
    latest, origin = wandb_artifacts.checkpoint_from_offline_run(run_dir, "latest")
    assert latest == run_dir_of_run / "checkpoints" / "checkpoint_6.pt" and "stopped before logging" in origin
    assert wandb_artifacts.checkpoint_from_offline_run(run_dir, "best")[0] == Path(best.last_checkpoint)


def test_none_logs_no_checkpoint_artifact(offline_run, tmp_path):
    uploader, best = _train(offline_run, tmp_path / "runs" / offline_run.id, "none", epochs=2)
    uploader.close(Path(best.last_checkpoint))
    _, versions = _versions(offline_run)
    assert versions == [] and not (tmp_path / "runs" / offline_run.id / KEPT_DIR).exists()
    assert len(list((tmp_path / "runs" / offline_run.id / "checkpoints").glob("checkpoint_*.pt"))) == 2


def test_an_upload_error_is_one_warning_and_training_goes_on(offline_run, tmp_path):
    """W&B refuses every version (the run was finished under it): one warning line, no exception; training and
    the checkpoint files go on, and no staging link is left behind."""
    offline_run.finish()
    warnings: list[str] = []
    uploader, best = _train(offline_run, tmp_path / "runs" / offline_run.id, "all", warnings, epochs=2)
    uploader.close(Path(best.last_checkpoint))
    assert len(warnings) == 1 and "could not log checkpoint checkpoint_1.pt" in warnings[0], warnings
    assert "Traceback" not in warnings[0] and "training goes on" in warnings[0]
    checkpoints = tmp_path / "runs" / offline_run.id / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint_*.pt")) == ["checkpoint_5.pt", "checkpoint_6.pt"]
    assert not list(checkpoints.glob(".upload-*"))


# ---------------------------------------------------------------- after a kill, after a resume


def test_clean_debris_removes_staging_links_and_unfinished_writes_only(tmp_path):
    (tmp_path / "checkpoint_4.pt").write_bytes(b"intact")
    os.link(tmp_path / "checkpoint_4.pt", tmp_path / ".upload-4242-0-checkpoint_4.pt")
    (tmp_path / "tmpa1b2c3d4").write_bytes(b"half a torch.save")
    (tmp_path / "best_checkpoint_4_validation_accuracy=0.5000.pt").write_bytes(b"best")
    removed = clean_debris(tmp_path)
    assert sorted(p.name for p in removed) == [".upload-4242-0-checkpoint_4.pt", "tmpa1b2c3d4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_checkpoint_4_validation_accuracy=0.5000.pt",
                                                          "checkpoint_4.pt"]
    assert (tmp_path / "checkpoint_4.pt").read_bytes() == b"intact"
