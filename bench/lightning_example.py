"""The same training in PyTorch Lightning 2.x, as its users would write it: WandbLogger (offline), ModelCheckpoint
each epoch, the default progress bar, validation each epoch, logging every step. Same model, optimizer, seed and
in-memory loaders as `scripts/train.py`. Prints `BENCH {"train_seconds": ...}` (the epoch's training batches).

    python bench/lightning_example.py --dataset fashion-mnist --epochs 1 --output-dir /tmp/lightning
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402

from ignite_app.data import load_splits, make_loaders  # noqa: E402
from ignite_app.models import build_model  # noqa: E402


class Classifier(L.LightningModule):
    def __init__(self, model: torch.nn.Module, lr: float) -> None:
        super().__init__()
        self.model, self.lr = model, lr
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def training_step(self, batch, _):
        x, y = batch
        loss = self.loss_fn(self.model(x), y)
        self.log("training/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        logits = self.model(x)
        self.log("validation/loss", self.loss_fn(logits, y))
        self.log("validation/accuracy", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class EpochTimer(Callback):
    def on_train_epoch_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.last = time.perf_counter()

    def on_train_end(self, trainer, module):
        print("BENCH " + json.dumps({"train_seconds": self.last - self.start}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--output-dir", default="lightning_runs")
    args = parser.parse_args()
    L.seed_everything(42, verbose=False)
    splits = load_splits(args.dataset, None, 0.1, 42)
    loaders = make_loaders(splits, 128, 1000, 42, 0, False)
    info = splits.info
    module = Classifier(build_model("convnet", (16, 32), info.num_classes, info.mean, info.std), 0.005)
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=1, log_every_n_steps=1,
        logger=WandbLogger(project="lightning-bench", offline=True, save_dir=args.output_dir),
        callbacks=[ModelCheckpoint(dirpath=os.path.join(args.output_dir, "checkpoints")), EpochTimer()],
        enable_model_summary=False,
    )
    trainer.fit(module, loaders.train, loaders.val)


if __name__ == "__main__":
    main()
