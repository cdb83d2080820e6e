"""Checkpoints on disk and as versions of one W&B artifact per run, logged by one uploader thread in save order.

Ignite has no W&B saver; this follows its `ClearMLSaver`: a `DiskSaver` subclass whose `__call__` also uploads.

    uploader = ArtifactUploader(run, run_dir, mode="best-and-last", warn=print)
    best = Checkpoint(..., WandBCheckpointSaver(run_dir / "checkpoints", trainer, uploader, best=True), ...)
    latest = Checkpoint(..., WandBCheckpointSaver(run_dir / "checkpoints", trainer, uploader), ...)
    ...
    uploader.close(best_file=Path(best.last_checkpoint))

The artifact is `checkpoint-<run id>`, typed `model`. Only latest-checkpoints become versions, with aliases `latest`
and `epoch-N` (at an epoch boundary) or `iter-N`; the version saved at the iteration of the best validation score
also gets `best`. W&B gives every new version `latest`, so a best-checkpoint logged as a version of its own could
take `latest` from the newest latest-checkpoint; one FIFO thread logs in save order, so `latest` is the newest save.

`mode` (--log-checkpoints, Lightning's `log_model` convention):
  all            every saved version.
  best-and-last  online: every version, and the uploader deletes the versions that lost both `latest` and `best`
                 (public API, on its thread). Offline nothing is uploaded until `wandb sync`, so a version logged
                 and later superseded would stay on disk for ever: the best and the last are logged when the run
                 ends (or is preempted), as Lightning's `log_model=True` does.
  none           no checkpoint artifacts (the files on disk are the resume points).
Offline, W&B's default (`policy="mutable"`) copies each version into its staging directory
(~/.local/share/wandb/artifacts/staging) until `wandb sync`, which nothing bounds; versions are added `immutable`
instead, from a hard link under OUTPUT_DIR/RUN_ID/artifacts/ that pruning cannot remove (no extra bytes while the
checkpoint file exists). Online, W&B stages a copy that it deletes once uploaded (`skip_cache`: no cache copy).
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ignite.engine import Engine
from ignite.handlers import DiskSaver

from ignite_app.config import DEFAULT_LOG_CHECKPOINTS, LOG_CHECKPOINTS
from ignite_app.disk import checkpoint_write
from ignite_app.wandb_disk import wandb_writes

STAGED_PREFIX = ".upload-"  # a hard link that freezes a version's bytes until the uploader took them
KEPT_DIR = "artifacts"  # OUTPUT_DIR/RUN_ID/artifacts: the files offline versions reference until `wandb sync`
# what a killed process leaves in its checkpoint directory: our staging links, DiskSaver's atomic-write temp files
DEBRIS_GLOBS = (f"{STAGED_PREFIX}*", "tmp*")
KEEP_ALIASES = frozenset({"latest", "best"})


def step_alias(trainer: Engine) -> str:
    """`epoch-N` when the trainer stands at an epoch boundary, `iter-N` otherwise."""
    state = trainer.state
    if state.epoch_length and state.iteration % state.epoch_length == 0:
        return f"epoch-{state.iteration // state.epoch_length}"
    return f"iter-{state.iteration}"


def is_offline(run: Any) -> bool:
    settings = getattr(run, "settings", None)
    return getattr(settings, "mode", None) in ("offline", "dryrun")


class ArtifactUploader:
    """Logs checkpoint versions to the W&B run from one background thread, in the order they were saved, so that
    hashing and staging never stall training. An upload error is one warning; training and the files go on."""

    def __init__(self, run: Any, run_dir: Path, mode: str = DEFAULT_LOG_CHECKPOINTS,
                 warn: Callable[[str], None] = print, artifact_name: Optional[str] = None) -> None:
        if mode not in LOG_CHECKPOINTS:
            raise ValueError(f"mode must be one of {LOG_CHECKPOINTS}, got {mode!r}")
        self.run, self.mode, self.warn = run, mode, warn
        self.enabled = run is not None and not getattr(run, "disabled", False) and mode != "none"
        self.offline = self.enabled and is_offline(run)
        self.kept_dir = Path(run_dir) / KEPT_DIR
        self.artifact_name = artifact_name or (f"checkpoint-{run.id}" if run is not None else "checkpoint")
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb-checkpoint")
        self._pending: list[concurrent.futures.Future] = []
        self._ids = itertools.count()
        self._failed = False
        self._api: Any = None  # wandb.Api, online best-and-last
        self.best_iteration: Optional[int] = None
        self.last: Optional[tuple[Path, list[str], dict[str, Any]]] = None  # deferred: the newest latest-checkpoint

    @property
    def deferred(self) -> bool:
        """Offline best-and-last: the best and the last are logged at `close`, not as saved."""
        return self.offline and self.mode == "best-and-last"

    def saved_best(self, iteration: int) -> None:
        self.best_iteration = iteration

    def saved_latest(self, path: Path, aliases: list[str], info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if info["iteration"] == self.best_iteration:  # the best Checkpoint saved this iteration just before
            aliases = [*aliases, "best"]
        if self.deferred:
            self.last = (path, aliases, info)
            return
        # a hard link freezes this version's bytes: pruning may remove the file before the thread takes it
        staged = path.parent / f"{STAGED_PREFIX}{os.getpid()}-{next(self._ids)}-{path.name}"
        staged.hardlink_to(path)
        self._submit(staged, path.name, aliases, info, owned=True)

    def _submit(self, path: Path, name: str, aliases: list[str], info: dict[str, Any], owned: bool) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._log, path, name, aliases, info, owned))

    def _log(self, path: Path, name: str, aliases: list[str], info: dict[str, Any], owned: bool) -> None:
        import wandb

        try:
            if self._failed:
                return
            with wandb_writes():  # W&B's own disk full: one warning for the run, the checkpoint on disk stands
                artifact = wandb.Artifact(self.artifact_name, type="model", metadata=info)
                if self.offline:
                    artifact.add_file(str(self._keep(path, name)), name=name, policy="immutable", skip_cache=True)
                else:
                    artifact.add_file(str(path), name=name, skip_cache=True)
                logged = self.run.log_artifact(artifact, aliases=aliases)
                if self.mode == "best-and-last" and not self.offline:
                    self._delete_superseded(logged)
        except Exception as exc:  # noqa: BLE001 - W&B trouble must not stop training; the files are on disk
            self._failed = True
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.warn(f"Warning: W&B could not log checkpoint {name} as an artifact ({type(exc).__name__}: {detail}); "
                      "training goes on, the checkpoints stay on disk, no further checkpoint artifacts are logged "
                      "in this process.")
        finally:
            if owned:
                path.unlink(missing_ok=True)

    def _keep(self, path: Path, name: str) -> Path:
        """A hard link under OUTPUT_DIR/RUN_ID/artifacts/ that the offline version references until `wandb sync`.
        Named by inode first: one name per content, however often a resumed run rewrites checkpoint_N.pt, and no
        match for the `checkpoint_*.pt` that `--auto-resume` and `--resume DIR` look for."""
        self.kept_dir.mkdir(parents=True, exist_ok=True)
        kept = self.kept_dir / f"{path.stat().st_ino}-{name}"
        if not kept.exists():
            try:
                kept.hardlink_to(path)
            except OSError:  # another file system, or no hard links there
                shutil.copyfile(path, kept)
        return kept

    def _delete_superseded(self, logged: Any) -> None:
        """Online best-and-last: delete every version of this artifact that holds neither `latest` nor `best`
        (Lightning issue 9356), those of earlier processes of this run included."""
        import wandb

        logged.wait()
        self._api = self._api or wandb.Api()
        collection = logged.qualified_name.rsplit(":", 1)[0]
        for version in self._api.artifacts("model", collection):
            if not KEEP_ALIASES & set(version.aliases):
                version.delete(delete_aliases=True)

    def wait(self) -> None:
        """Block until every queued version has been handed to W&B."""
        for future in list(self._pending):
            future.result()
        self._pending.clear()

    def close(self, best_file: Optional[Path] = None) -> None:
        """Log what waits for the end (offline best-and-last: `best_file`, the best Checkpoint's file, unless the last
        version is the best, then the last, so `latest` is the last), and drain the queue."""
        if self.deferred and self.last is not None:
            path, aliases, info = self.last
            if best_file is not None and "best" not in aliases and best_file.is_file():
                self._submit(best_file, best_file.name, ["best"], {"file": best_file.name, "kind": "best"}, owned=False)
            if path.is_file():
                self._submit(path, path.name, aliases, info, owned=False)
            self.last = None
        self.wait()
        self._pool.shutdown(wait=True)


class WandBCheckpointSaver(DiskSaver):
    """DiskSaver (atomic writes, pruning by Checkpoint's n_saved) that hands each saved file to the run's uploader."""

    def __init__(self, dirname: str | Path, trainer: Engine, uploader: Optional[ArtifactUploader] = None,
                 best: bool = False, **kwargs: Any) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False, **kwargs)
        self.trainer, self.uploader, self.best = trainer, uploader, best
        self._prune_after_write: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        with checkpoint_write(self.dirname, filename):  # a full disk: one clear message, no temp file left
            super().__call__(checkpoint, filename, metadata)
        for old in self._prune_after_write:
            if old != filename:  # Checkpoint "prunes" a file it saves again under the same name (same step)
                self._remove_now(old)
        self._prune_after_write.clear()
        if self.uploader is None:
            return
        state = self.trainer.state
        if self.best:
            self.uploader.saved_best(state.iteration)
            return
        info = {"file": filename, "iteration": state.iteration, "epoch": state.epoch}
        self.uploader.saved_latest(self.dirname / filename, ["latest", step_alias(self.trainer)], info)

    def remove(self, filename: str) -> None:
        """Ignite's Checkpoint prunes the oldest file *before* it writes the new one: a write that fails (a full
        disk) or a kill in between would cost a good checkpoint. The file goes once the new one is on disk."""
        self._prune_after_write.append(filename)

    def _remove_now(self, filename: str) -> None:
        """Prune an old checkpoint that may already be gone: a run resumed from an older checkpoint inherits its
        Checkpoint's list of saved files, and the newer run it branched from pruned some of them already."""
        if (self.dirname / filename).exists():
            super().remove(filename)


def clean_debris(directory: Path) -> list[Path]:
    """Remove what a killed process left in a checkpoint directory: staging links and DiskSaver's temp files. Call
    it holding the run's lock, so no live process's files are taken."""
    removed = [p for pattern in DEBRIS_GLOBS for p in Path(directory).glob(pattern) if p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
