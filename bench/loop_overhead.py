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
from ignite.engine import Events  # noqa: E402

from ignite_app import attach_handlers, build, parse  # noqa: E402
from ignite_app.models import build_model  # noqa: E402


def family_cpu() -> float:
    """CPU seconds of this process and its children (W&B's service, `wandb-core`, and its system monitor), from
    /proc: less moved by the load of a shared machine than wall time, and it counts what the service takes."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # fields[1]: the parent's pid; [11], [12]: user and system ticks
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


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
    framework, bare, framework_cpu, bare_cpu = [], [], [], []
    epoch_length = len(app.loaders.train)
    # the epoch's iterations (every handler of theirs included), not the validation and checkpoint that follow
    app.trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: framework_cpu.append(-family_cpu()))
    app.trainer.add_event_handler(Events.ITERATION_COMPLETED(every=epoch_length),
                                  lambda _: framework_cpu.__setitem__(-1, framework_cpu[-1] + family_cpu()))
    for epoch in range(1, args.rounds + 1):
        app.trainer.run(app.loaders.train, max_epochs=epoch)
        framework.append(app.trainer.state.times["EPOCH_COMPLETED"])
        cpu = family_cpu()
        bare.append(bare_epoch(bare_model, bare_optimizer, app.loaders.train, epoch))
        bare_cpu.append(family_cpu() - cpu)
    app.close()
    print("BENCH " + json.dumps({
        "loop_framework_seconds": statistics.median(framework), "loop_bare_seconds": statistics.median(bare),
        "loop_ratio": statistics.median(framework) / statistics.median(bare), "framework_epochs": framework,
        "loop_cpu_ratio": statistics.median(framework_cpu) / statistics.median(bare_cpu),
        "bare_epochs": bare, "iterations_per_epoch": len(app.loaders.train),
        "framework_epoch_cpu": framework_cpu, "bare_epoch_cpu": bare_cpu,
    }), flush=True)


if __name__ == "__main__":
    main()
