"""The floor: a bare PyTorch loop over the same in-memory uint8 tensors, model, optimizer, seed and batch size as
`scripts/train.py` with its defaults. Prints one JSON line: {"train_seconds": ..., "iterations": ...,
"first_iteration": time.time() when the first step completed (the floor of the launch-to-first-iteration time: the
imports of torch and its optimizer's torch._dynamo, the dataset read)}.

    python bench/bare_loop.py --dataset fashion-mnist --epochs 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from ignite_app.data import load_splits  # noqa: E402
from ignite_app.models import build_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--as-trained", action="store_true",
                        help="the network as train.py runs it (channels-last, pool before ReLU); default: the W&B "
                        "tutorial's network as written (ReLU before pool, NCHW), the eager baseline")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    splits = load_splits(args.dataset, None, 0.1, args.seed)
    info = splits.info
    model = build_model("convnet", (16, 32), info.num_classes, info.mean, info.std, channels_last=args.as_trained)
    if not args.as_trained:
        for block in (model.backbone.layer1, model.backbone.layer2):  # back to the tutorial's conv -> ReLU -> pool
            block[1], block[2] = block[2], block[1]
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = splits.train.images, splits.train.labels
    generator = torch.Generator().manual_seed(args.seed)
    iterations = 0
    start = time.perf_counter()
    first_iteration = None
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        for first in range(0, len(labels), args.batch_size):
            index = order[first : first + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(images[index]), labels[index])
            loss.backward()
            optimizer.step()
            iterations += 1
            first_iteration = first_iteration or time.time()
    print("BENCH " + json.dumps({"train_seconds": time.perf_counter() - start, "iterations": iterations,
                                 "first_iteration": first_iteration}))


if __name__ == "__main__":
    main()
