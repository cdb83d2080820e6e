"""The training step of the default network under each CPU option, in one process: the W&B tutorial's eager loop as
written (NCHW, ReLU before pool), the default (channels-last, pool before ReLU), bf16 autocast on top (`--amp`,
changes numerics) and, with `--compile`, torch.compile (inductor) of the default. Alternating blocks of steps,
medians of this thread's CPU time per step with one intra-op thread (a loaded machine's descheduled OpenMP worker
would otherwise be spun for on this thread's clock). Prints `BENCH {json}`.

    python bench/step_options.py --rounds 6 --compile
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

from ignite_app.models import build_model  # noqa: E402


def make(channels_last: bool, tutorial_order: bool = False):
    torch.manual_seed(0)
    model = build_model("convnet", (16, 32), 10, (0.286,), (0.353,), channels_last=channels_last)
    if tutorial_order:  # back to the tutorial's conv -> ReLU -> pool
        for block in (model.backbone.layer1, model.backbone.layer2):
            block[1], block[2] = block[2], block[1]
    return model, torch.optim.Adam(model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=15, help="steps per block")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (its compilation is timed apart)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randint(0, 256, (args.batch_size, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (args.batch_size,))
    variants = {"eager_tutorial": (*make(False, True), False), "default": (*make(True), False),
                "default_bf16_autocast": (*make(True), True)}
    results: dict = {}
    if args.compile:
        model, optimizer = make(True)
        variants["default_compiled"] = (torch.compile(model), optimizer, False)

    def step(model, optimizer, bf16: bool) -> None:
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        optimizer.step()

    if args.compile:
        wall, cpu = time.perf_counter(), time.thread_time()
        step(*variants["default_compiled"])
        step(*variants["default_compiled"])
        results["compile_wall_seconds"] = time.perf_counter() - wall
        results["compile_thread_cpu_seconds"] = time.thread_time() - cpu
    ms = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, variant in variants.items():
            start = time.thread_time()
            for _ in range(args.steps):
                step(*variant)
            ms[name].append((time.thread_time() - start) / args.steps * 1e3)
    median = {name: statistics.median(v) for name, v in ms.items()}
    results.update({"ms_per_step": median, "speedup_vs_eager_tutorial":
                    {name: median["eager_tutorial"] / v for name, v in median.items()}, "rounds_ms": ms})
    print("BENCH " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
