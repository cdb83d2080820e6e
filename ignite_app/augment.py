"""`--augment`: random crop with padding and horizontal flip (the CIFAR standard), applied to each training batch.

The random parameters of batch `iteration` are drawn from a generator seeded by (seed, iteration): a pure function
of where the trainer is, so a run resumed mid-epoch augments every later batch exactly as the uninterrupted run
did, and the global RNG (dropout, ...) is never touched.
"""
from __future__ import annotations

import torch
from ignite.engine import Engine, Events


class BatchAugment:
    """Pad by `padding` (torchvision.transforms.v2's pad), crop each image back at its own random offset and flip
    half of the images (v2's horizontal_flip).

    Why not v2.RandomCrop / v2.RandomHorizontalFlip on the batch: a v2 transform draws one set of parameters per
    call and applies it to every image of a batched tensor, so the whole batch would share one crop and one flip.
    Per-image crops are one gather here; per-item v2 calls would put a Python loop on the hot path."""

    def __init__(self, seed: int, image_size: tuple[int, int], padding: int = 0) -> None:
        height, width = image_size
        self.seed = seed
        self.padding = padding or max(1, round(max(height, width) / 8))  # 4 for CIFAR's 32 x 32
        self.size = (height, width)

    def generator(self, iteration: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + iteration) % 2**63)

    def __call__(self, images: torch.Tensor, iteration: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        n = images.shape[0]
        height, width = self.size
        pad = self.padding
        gen = self.generator(iteration)
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        padded = TF.pad(images, [pad, pad, pad, pad], fill=0)
        rows = (offsets[0][:, None] + torch.arange(height))[:, None, :, None]  # (n, 1, H, 1)
        cols = (offsets[1][:, None] + torch.arange(width))[:, None, None, :]  # (n, 1, 1, W)
        batch = torch.arange(n)[:, None, None, None]
        channel = torch.arange(images.shape[1])[None, :, None, None]
        out = padded[batch, channel, rows, cols]
        if flip.any():
            out[flip] = TF.horizontal_flip(out[flip])
        return out

    def on_batch(self, engine: Engine) -> None:
        """ITERATION_STARTED (the iteration is counted, the update has not run): replace the fetched batch."""
        images, labels = engine.state.batch
        engine.state.batch = (self(images, engine.state.iteration), labels)

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.ITERATION_STARTED, self.on_batch)
