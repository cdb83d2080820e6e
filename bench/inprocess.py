"""In-process costs: how long a checkpoint blocks the training thread (W&B artifact logging included), how long a
resume takes, and ONNX export + verification. Prints one `BENCH {json}` line.

    WANDB_MODE=offline python bench/inprocess.py --dataset fashion-mnist --output-dir /tmp/bench-inprocess
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ignite.engine import Events  # noqa: E402

from ignite_app import attach_handlers, build, parse, resume  # noqa: E402
from ignite_app.config import ONNX_EXPORTERS  # noqa: E402
from ignite_app.onnx_tools import export_and_verify  # noqa: E402


def timed_ms(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def checkpoint_costs(app, repeats: int) -> dict:
    """Training-thread time of one `latest` checkpoint: as shipped (artifact logged from a background thread), and
    with the artifact logged inline, for contrast."""
    checkpointer = app.checkpointers["checkpointer"]

    def checkpoint() -> None:
        app.trainer.state.iteration += 1  # a new file each time, as in training (a same-name re-save is not one)
        checkpointer(app.trainer)

    uploader = app.uploader  # --log-checkpoints all: every checkpoint is an artifact version, logged in the background
    background = timed_ms(checkpoint, repeats)
    uploader.wait()
    pool = uploader._pool
    uploader._pool = _Inline()  # run the W&B logging on this thread
    inline = timed_ms(checkpoint, repeats)
    uploader._pool = pool
    size = max((app.output_dir / "checkpoints").glob("checkpoint_*.pt"), key=os.path.getmtime).stat().st_size
    return {"checkpoint_blocked_ms": statistics.median(background), "checkpoint_blocked_ms_max": max(background),
            "checkpoint_inline_upload_ms": statistics.median(inline), "checkpoint_bytes": size}


class _Inline:
    def submit(self, fn, *args):
        fn(*args)
        return _Done()


class _Done:
    def done(self) -> bool:
        return True

    def result(self) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    # batch size 1: an epoch of over 1000 iterations, so the checkpoints written below (a new iteration each) stay in
    # the first epoch and the newest resumes under the same data order; the model and its checkpoints are the same
    flags = ["--dataset", args.dataset, "--epochs", "1", "--no-progress-bar", "--log-checkpoints", "all",
             "--batch-size", "1", "--output-dir", args.output_dir]
    app = attach_handlers(build(parse(flags)))
    app.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda engine: engine.terminate())
    app.trainer.run(app.loaders.train, max_epochs=1)  # a trainer state to checkpoint
    results = checkpoint_costs(app, args.repeats)
    images = app.splits.val.images[:64]
    for exporter in ONNX_EXPORTERS:
        start = time.perf_counter()
        report = export_and_verify(app.model, images, Path(args.output_dir) / f"bench-{exporter}.onnx", exporter=exporter)
        results[f"onnx_{exporter}_seconds"] = time.perf_counter() - start
        results[f"onnx_{exporter}_verify_seconds"] = report.verify_seconds
    if app.uploader is not None:
        app.uploader.wait()
    newest = resume.newest_checkpoint(Path(args.output_dir))
    start = time.perf_counter()
    checkpoint = resume.load_checkpoint(newest, str(newest))
    results["resume_load_seconds"] = time.perf_counter() - start
    app.close()
    fresh = attach_handlers(build(parse(flags), checkpoint))
    start = time.perf_counter()
    fresh.restore(checkpoint)
    results["resume_restore_seconds"] = time.perf_counter() - start
    fresh.close()
    print("BENCH " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
