"""Why ignite-app does not rely on Ignite's DeterministicEngine for resumes (a canary: if Ignite changes, this fails).

DeterministicEngine restores the saved RNG states for a mid-epoch resume in `_setup_engine`, but
`ReproducibleBatchSampler.__iter__` is a generator: the shuffle permutation (drawn from the global RNG by the
RandomSampler inside) is only drawn at the first `next()`, i.e. *after* the restore, from the mid-epoch RNG state.
The resumed epoch then sees another batch order. At an epoch boundary nothing is restored, so it matches.
Drawing the permutation eagerly in `__iter__` makes mid-epoch resumes bit-exact.
"""
import copy

import pytest
import torch
from ignite.engine import Events, create_supervised_trainer
from ignite.engine.deterministic import ReproducibleBatchSampler
from ignite.utils import manual_seed
from torch.utils.data import DataLoader, TensorDataset

from ignite_app.data import load_splits
from ignite_app.models import build_model

pytestmark = pytest.mark.e2e  # trains (in-process) several times

SPLITS = load_splits("digits", None, 0.1, seed=0)
DATA = TensorDataset(SPLITS.train.images.float(), SPLITS.train.labels)  # 11 batches of 128


def _eager_iter(self):
    self.setup_batch_indices()
    return iter(self.batch_indices)


def train(stop_at=None, state=None):
    manual_seed(0)
    model = build_model("net", (16, 32), 10, 0.3, 0.3)  # dropout: the RNG state matters
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = create_supervised_trainer(model, optimizer, torch.nn.functional.cross_entropy, deterministic=True)
    saved = {}
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        trainer.load_state_dict(state["trainer"])
    if stop_at:
        @trainer.on(Events.ITERATION_COMPLETED(once=stop_at))
        def _save(engine):
            saved.update(model=copy.deepcopy(model.state_dict()), optimizer=copy.deepcopy(optimizer.state_dict()),
                         trainer=engine.state_dict())
            engine.terminate()
    trainer.run(DataLoader(DATA, batch_size=128, shuffle=True), max_epochs=2)
    return model.state_dict(), saved


def resumes_bit_exact(at: int) -> bool:
    full, _ = train()
    _, saved = train(stop_at=at)
    resumed, _ = train(state=saved)
    return all(torch.equal(full[k], resumed[k]) for k in full)


def test_epoch_boundary_resume_is_exact_mid_epoch_is_not():
    assert resumes_bit_exact(11)
    assert not resumes_bit_exact(15)


def test_drawing_the_permutation_eagerly_fixes_mid_epoch(monkeypatch):
    monkeypatch.setattr(ReproducibleBatchSampler, "__iter__", _eager_iter)
    assert resumes_bit_exact(15)
