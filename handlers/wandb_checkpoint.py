"""A save handler for Ignite's Checkpoint that writes to disk atomically and logs each file as a W&B artifact.

Ignite has no W&B saver; this follows its `ClearMLSaver`: a `DiskSaver` subclass whose `__call__` also uploads.

    saver = WandBCheckpointSaver(run_dir / "checkpoints", run, trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, Checkpoint(to_save, saver, n_saved=2, include_self=True))

Artifacts are named `checkpoint-<run id>`, typed `model`, with aliases `latest` and `epoch-N` (at an epoch
boundary) or `iter-N`; a saver built with `aliases=("best",)` (for the best-score Checkpoint) uses those instead. The artifact is logged from a background thread,
so W&B's hashing and staging copy never stall the training loop; `wait()` (or `close()`) drains the queue.
"""
from __future__ import annotations

import concurrent.futures
import itertools
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ignite.engine import Engine
from ignite.handlers import DiskSaver

from ignite_app.disk import checkpoint_write
from ignite_app.wandb_disk import wandb_writes


def step_alias(trainer: Engine) -> str:
    """`epoch-N` when the trainer stands at an epoch boundary, `iter-N` otherwise."""
    state = trainer.state
    if state.epoch_length and state.iteration % state.epoch_length == 0:
        return f"epoch-{state.iteration // state.epoch_length}"
    return f"iter-{state.iteration}"


class WandBCheckpointSaver(DiskSaver):
    """DiskSaver (atomic writes, pruning by Checkpoint's n_saved) + one W&B model artifact version per save."""

    def __init__(
        self,
        dirname: str | Path,
        run: Any,
        trainer: Engine,
        aliases: Optional[Sequence[str]] = None,
        artifact_name: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False, **kwargs)
        self.run = run
        self.trainer = trainer
        self.fixed_aliases = list(aliases) if aliases else None
        self.artifact_name = artifact_name or (f"checkpoint-{run.id}" if run is not None else "checkpoint")
        self._uploader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb-checkpoint")
        self._pending: list[concurrent.futures.Future] = []
        self._staged_ids = itertools.count()
        self.logged: list[dict[str, Any]] = []  # what was sent to W&B: file, aliases
        self._prune_after_write: list[str] = []

    @property
    def enabled(self) -> bool:
        return self.run is not None and not getattr(self.run, "disabled", False)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        with checkpoint_write(self.dirname, filename):  # a full disk: one clear message, no temp file left
            super().__call__(checkpoint, filename, metadata)
        for old in self._prune_after_write:
            self._remove_now(old)
        self._prune_after_write.clear()
        if not self.enabled:
            return
        aliases = self.fixed_aliases or ["latest", step_alias(self.trainer)]
        info = {
            "file": filename,
            "iteration": self.trainer.state.iteration,
            "epoch": self.trainer.state.epoch,
            "aliases": aliases,
            **({"score_name": metadata["score_name"], "score": metadata["priority"]}
               if metadata and metadata.get("score_name") else {}),
        }
        # a hard link freezes this version's bytes: pruning or a later save may remove the file before upload
        staged = self.dirname / f".upload-{next(self._staged_ids)}-{filename}"
        staged.hardlink_to(self.dirname / filename)
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._uploader.submit(self._log_artifact, staged, filename, aliases, info))

    def remove(self, filename: str) -> None:
        """Ignite's Checkpoint prunes the oldest file *before* it writes the new one: a write that fails (a full
        disk) or a kill in between would cost a good checkpoint. The file goes once the new one is on disk."""
        self._prune_after_write.append(filename)

    def _remove_now(self, filename: str) -> None:
        """Prune an old checkpoint that may already be gone: a run resumed from an older checkpoint inherits its
        Checkpoint's list of saved files, and the newer run it branched from pruned some of them already."""
        if (self.dirname / filename).exists():
            super().remove(filename)

    def _log_artifact(self, staged: Path, filename: str, aliases: list[str], info: dict[str, Any]) -> None:
        import wandb

        try:
            with wandb_writes():  # W&B's own disk full: one warning for the run, the checkpoint on disk stands
                artifact = wandb.Artifact(self.artifact_name, type="model", metadata=info)
                artifact.add_file(str(staged), name=filename)
                self.run.log_artifact(artifact, aliases=aliases)
                self.logged.append(info)
        finally:
            staged.unlink(missing_ok=True)

    def wait(self) -> None:
        """Block until every queued artifact has been handed to W&B; re-raise an upload error."""
        for future in list(self._pending):
            future.result()
        self._pending.clear()

    def close(self) -> None:
        self.wait()
        self._uploader.shutdown(wait=True)
