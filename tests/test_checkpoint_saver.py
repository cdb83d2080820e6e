"""WandBCheckpointSaver with Ignite's Checkpoint and a tiny Engine (no W&B run: the disk side only)."""
from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from ignite_app.handlers.wandb_checkpoint import WandBCheckpointSaver


def _checkpointer(directory, trainer, model) -> Checkpoint:
    return Checkpoint({"model": model, "trainer": trainer}, WandBCheckpointSaver(directory, None, trainer), n_saved=2,
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
