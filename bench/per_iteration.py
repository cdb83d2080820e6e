"""What the framework costs per training iteration, without the network: CPU microseconds (this thread's, which the
load of a shared machine moves much less than wall time) of `scripts/train.py`'s trainer with every default handler
attached and a no-op step, against a bare loop over the same loader; and of one W&B `run.log` call. Divided by the
network's step time, this is the loop overhead that bench/loop_overhead.py measures by alternating whole epochs.
Prints `BENCH {json}`.

    WANDB_MODE=offline python bench/per_iteration.py --output-dir /tmp/per-iteration
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--flags", default="", help="more train.py flags, e.g. '--watch off --log-interval 1'")
    args = parser.parse_args()
    app = attach_handlers(build(parse(["--dataset", args.dataset, "--epochs", str(args.rounds), "--no-onnx", "--no-progress-bar",
                                       "--output-dir", args.output_dir, *args.flags.split()])))
    # one intra-op thread: the batch gather's OpenMP worker, descheduled on a loaded machine, would be waited for
    # in a spin that counts as this thread's CPU time
    torch.set_num_threads(1)
    loader, trainer = app.loaders.train, app.trainer
    loss = torch.tensor(0.5)
    # Ignite's engine calls this in place of the supervised step: everything else (events, handlers) runs as usual
    trainer._process_function = lambda engine, batch: loss.item()
    epoch_length = len(loader)
    marks: list[float] = []
    # appended last: from the end of an epoch's first iteration to the end of its second-to-last, every handler
    # included, the epoch's last iteration (and the validation and checkpoint after it) not
    trainer.add_event_handler(Events.ITERATION_COMPLETED(
        event_filter=lambda _, i: (i - 1) % epoch_length in (0, epoch_length - 2)), lambda _: marks.append(time.thread_time()))
    framework, bare = [], []
    for epoch in range(1, args.rounds + 1):
        trainer.run(loader, max_epochs=epoch)
        framework.append((marks[-1] - marks[-2]) / (epoch_length - 2) * 1e6)
        start = time.thread_time()
        for batch in loader:
            loss.item()
        bare.append((time.thread_time() - start) / epoch_length * 1e6)
    run = getattr(app.wandb_logger, "run", None)
    log_us = log_wall_us = None
    if run is not None and not getattr(run, "disabled", False):
        start, wall = time.thread_time(), time.perf_counter()
        for i in range(200):
            app.wandb_logger.log({"training/loss": 0.5, "lr/group_0": 0.001}, step=10**6 + i)
        log_us = (time.thread_time() - start) / 200 * 1e6
        log_wall_us = (time.perf_counter() - wall) / 200 * 1e6  # what the caller waits, W&B's hand-off included
    app.close()
    print("BENCH " + json.dumps({
        "framework_us_per_iteration": statistics.median(framework), "bare_us_per_iteration": statistics.median(bare),
        "overhead_us_per_iteration": statistics.median(framework) - statistics.median(bare),
        "wandb_log_call_us": log_us, "wandb_log_call_wall_us": log_wall_us, "framework_rounds_us": framework, "bare_rounds_us": bare,
    }), flush=True)


if __name__ == "__main__":
    main()
