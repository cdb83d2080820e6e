"""Log the validation images the model gets most wrong as a W&B table, each epoch (the tutorials' "hard examples").

As a user's own handler file (the README's worked example):

    python scripts/train.py --handler handlers/hard_examples.py:HardExamplesTable --handler-arg every=2

or by its registered name (entry point group `ignite_app.handlers`): `--handler hard-examples`.
"""
from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine, Events


def wandb_image(pixels: torch.Tensor) -> Any:
    """A wandb.Image of one image (C x H x W uint8, one or three channels)."""
    import wandb

    array = pixels.cpu().numpy()
    return wandb.Image(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))


class HardExamplesTable:
    """Each `every` epochs: the `count` misclassified validation images with the highest loss, as a wandb.Table of
    (image, true class, predicted class, probability of the prediction, loss), logged at the trainer's iteration.

    A `--handler` class: it is built from the keyword arguments before anything is written (so a bad `every` stops
    the run before it starts), and `attach(app)` is called once the app exists."""

    def __init__(self, every: int = 1, count: int = 16) -> None:
        for name, value in (("every", every), ("count", count)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        self.every, self.count = every, count
        self.app: Any = None

    def attach(self, app: Any) -> None:
        self.app = app
        app.trainer.add_event_handler(Events.EPOCH_COMPLETED(every=self.every), self)

    @torch.no_grad()
    def __call__(self, trainer: Engine) -> None:
        import wandb

        app = self.app
        model, device = app.model, app.device
        was_training = model.training
        model.eval()
        split = app.splits.val
        labels = split.labels
        logits = torch.cat([model(split.__getitems__(list(range(i, min(i + 1000, len(split)))))[0].to(device)).float().cpu()
                            for i in range(0, len(split), 1000)])
        model.train(was_training)
        losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        probs, predicted = logits.softmax(1).max(1)
        wrong = (predicted != labels).nonzero().flatten()
        hardest = wrong[losses[wrong].argsort(descending=True)[: self.count]]
        classes = app.splits.info.classes
        table = wandb.Table(columns=["image", "true", "predicted", "probability", "loss"])
        images, _ = split.__getitems__(hardest.tolist())
        for image, i in zip(images, hardest.tolist()):
            table.add_data(wandb_image(image), classes[labels[i]], classes[predicted[i]],
                           float(probs[i]), float(losses[i]))
        app.wandb_logger.log({"validation/hard_examples": table}, step=trainer.state.iteration)
