"""Training-loop overhead in one process: epochs of `scripts/train.py`'s trainer (everything attached, default flags:
W&B offline logging every --log-interval, lr, watch, checkpoints, TerminateOnNan, Timer) alternating with epochs of a
bare PyTorch loop over the same loader, model architecture, optimizer and seed. Same process, same data, so the
ratio is the framework's cost per iteration. Prints `BENCH {json}`.

    WANDB_MODE=offline python bench/loop_overhead.py --dataset fashion-mnist --rounds 3 --output-dir /tmp/loop
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from ignite_app import attach_handlers, build, parse  # noqa: E402
from ignite_app.models import build_model  # noqa: E402


def bare_epoch(model, optimizer, loader, epoch: int) -> float:
    loss_fn = torch.nn.CrossEntropyLoss()
    loader.batch_sampler.set_epoch(epoch)
    start = time.perf_counter()
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-interval", help="train.py's --log-interval (default: train.py's default)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--flags", default="", help="more train.py flags, e.g. '--watch off'")
    args = parser.parse_args()
    interval = ["--log-interval", args.log_interval] if args.log_interval else []
    app = attach_handlers(build(parse(["--dataset", args.dataset, "--epochs", str(args.rounds), "--no-onnx", *interval,
                                       "--output-dir", args.output_dir, *args.flags.split()])))
    info = app.splits.info
    torch.manual_seed(0)
    bare_model = build_model("convnet", (16, 32), info.num_classes, info.mean, info.std,
                             channels_last=app.config.channels_last)  # the same network: the ratio is the framework's
    bare_optimizer = torch.optim.Adam(bare_model.parameters(), lr=app.config.lr)
    framework, bare = [], []
    for epoch in range(1, args.rounds + 1):
        app.trainer.run(app.loaders.train, max_epochs=epoch)
        framework.append(app.trainer.state.times["EPOCH_COMPLETED"])
        bare.append(bare_epoch(bare_model, bare_optimizer, app.loaders.train, epoch))
    app.close()
    print("BENCH " + json.dumps({
        "loop_framework_seconds": statistics.median(framework), "loop_bare_seconds": statistics.median(bare),
        "loop_ratio": statistics.median(framework) / statistics.median(bare), "framework_epochs": framework,
        "bare_epochs": bare, "iterations_per_epoch": len(app.loaders.train),
    }), flush=True)


if __name__ == "__main__":
    main()
