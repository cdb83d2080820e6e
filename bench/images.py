"""Benchmark of image datasets at CIFAR-10's size: training images/s with and without --augment, and what decoding
your own PNG files costs the first epoch (cold) against a run that finds the decoded cache (warm).

    .venv/bin/python bench/images.py            # ~3 min on 2 cores
    .venv/bin/python bench/images.py --quick    # ~1 min: 5,000-image CIFAR-10, 2,400 PNGs

(1) Training throughput: CIFAR-10 files at CIFAR-10's own size (50,000 + 10,000 images of 3 x 32 x 32, in
torchvision's cifar-10-batches-py layout, generated in memory and pickled in a second: tests/image_data.py's fake
files, whose red channel encodes the label) are read by `--dataset cifar10` through torchvision's CIFAR10 class; one
epoch of the default convnet, images/s by Ignite's own epoch timing, with and without `--augment`.
(2) Decoding: 60,000 PNGs take minutes to write on 2 cores, so a folder of 12,000 32 x 32 RGB PNGs (2,400 with
--quick) is generated and the per-image cost scaled to 60,000 (decoding is linear in the number of files: one thread
pool over the file list). Measured in one process: decode into memory (what every run pays whose images fit
--max-memory), decode into the disk cache (the first run over the budget), map the existing cache (every later
run); and whole `train.py` processes from start to the first training iteration, cold (decodes and writes the
cache) and warm (maps it).

Writes bench/images_results.json and prints a table; bench/run.py calls `measure` and adds its rows to its table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLASSES = tuple(f"class{i}" for i in range(10))
CIFAR10_IMAGES = 60_000  # 50,000 train + 10,000 test
FULL = {"cifar_train_per_batch": 10_000, "cifar_test": 10_000, "png_train_per_class": 1_000, "png_test_per_class": 200}
QUICK = {"cifar_train_per_batch": 1_000, "cifar_test": 1_000, "png_train_per_class": 200, "png_test_per_class": 40}


def generate_pngs(root: Path, train_per_class: int, test_per_class: int, size: int = 32) -> float:
    """Seconds to write the folder: coloured shapes (tests/image_data.py's), 10 classes of shape x hue x rotation."""
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    from image_data import HUES, draw_shape

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    kinds = list(HUES)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_shape(kinds[c % len(kinds)], size, rng).rotate(36 * c).save(folder / f"{i:05d}.png")
    return time.perf_counter() - start


def decode_costs(root: Path, cache: Path) -> dict[str, float]:
    """Seconds for each way of reading the folder once, in this process (its imports paid before: a train.py process
    pays them in its start-up either way)."""
    from ignite_app.imagefolder import load_folder, read_image

    import torchvision.datasets.folder  # noqa: F401  (the extensions list load_folder reads)

    read_image(str(next(root.rglob("*.png"))), 3, (32, 32))  # PIL's PNG plugin loaded
    out: dict[str, float] = {}
    for label, kwargs in (("decode_in_memory_s", {}), ("decode_to_disk_cache_s", {"max_memory": 1}),
                          ("map_existing_cache_s", {"max_memory": 1})):
        start = time.perf_counter()
        folder = load_folder(str(root), cache_dir=cache, **kwargs)
        out[label] = time.perf_counter() - start
        out["png_images"] = len(folder.train) + len(folder.test)
    return out


def stop_after_first_iteration(app) -> None:
    """A --handler for the cold/warm runs: the time of the first training iteration, then stop (the rest of the
    epoch is the throughput runs' business)."""
    from ignite.engine import Events

    @app.trainer.on(Events.ITERATION_COMPLETED(once=1))
    def _first(engine):
        print("BENCH " + json.dumps({"first_iteration": time.time()}), flush=True)
        engine.terminate()


def epoch_cpu_time(app) -> None:
    """A --handler for the throughput runs: CPU seconds of this process (all its threads) over the epoch's
    iterations. On a shared machine wall time moves with the other jobs' load; CPU time much less (W&B's service
    is another process and not counted)."""
    from ignite.engine import Events

    marks: dict[str, float] = {}
    app.trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: marks.update(start=time.process_time()))
    app.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: marks.update(end=time.process_time()))

    @app.trainer.on(Events.COMPLETED)
    def _done(_):
        print("BENCH " + json.dumps({"train_cpu_seconds": marks["end"] - marks["start"]}), flush=True)


def train(args: list[str], tmp: Path, cache: Path) -> dict[str, Any]:
    """One `train.py` process: its wall time, start-to-first-iteration seconds and BENCH values (OMP_NUM_THREADS, when
    set, passes on: `OMP_NUM_THREADS=1` makes the CPU-time figures independent of other jobs' load, as idle OpenMP
    threads spin on a busy machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp), WANDB_SILENT="true", XDG_CACHE_HOME=str(cache),
               IGNITE_APP_NO_DOWNLOAD="1")
    cmd = [PY, str(ROOT / "scripts/train.py"), *args, "--epochs", "1", "--no-progress-bar", "--no-onnx",
           "--no-test-report", "--watch", "off", "--output-dir", str(tmp / "runs")]
    start = time.time()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    values: dict[str, Any] = {"process_wall_s": wall}
    for match in re.finditer(r"BENCH (\{.*?\})\s*$", proc.stdout, re.MULTILINE):
        values.update(json.loads(match.group(1)))
    if "first_iteration" in values:
        values["first_iteration_after_start_s"] = values.pop("first_iteration") - start
    values["train_images"] = int(re.search(r"\((\d+) train / ", proc.stdout).group(1))
    return values


def cifar_throughput(tmp: Path, train_per_batch: int, test: int) -> dict[str, Any]:
    """One epoch of `--dataset cifar10` on generated CIFAR-10 files, without and with --augment."""
    sys.path.insert(0, str(ROOT / "tests"))
    from image_data import write_fake_cifar10

    start = time.perf_counter()
    data = write_fake_cifar10(tmp / "cifar", train_per_batch=train_per_batch, test=test)
    out: dict[str, Any] = {"generate_s": time.perf_counter() - start}
    timing = ["--handler", f"{ROOT}/bench/probes.py:training_time",
              "--handler", f"{ROOT}/bench/images.py:epoch_cpu_time"]
    for name, extra in (("plain", []), ("augment", ["--augment"])):
        run = train(["--dataset", "cifar10", "--data-dir", str(data), *timing, *extra], tmp, tmp / "cache")
        run["images_per_second"] = run["train_images"] / run["train_seconds"]
        run["images_per_cpu_second"] = run["train_images"] / run["train_cpu_seconds"]
        out[name] = run
    out["train_images"] = out["plain"]["train_images"]
    out["augment_cost"] = out["plain"]["images_per_second"] / out["augment"]["images_per_second"] - 1.0
    out["augment_cpu_cost"] = out["plain"]["images_per_cpu_second"] / out["augment"]["images_per_cpu_second"] - 1.0
    return out


def measure(tmp: Path, quick: bool = False) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    tmp.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"cifar10": cifar_throughput(tmp, sizes["cifar_train_per_batch"], sizes["cifar_test"])}
    root = tmp / "pngs"
    png: dict[str, Any] = {"generate_s": generate_pngs(root, sizes["png_train_per_class"], sizes["png_test_per_class"])}
    png.update(decode_costs(root, tmp / "decode-cache"))
    png["decode_images_per_second"] = png["png_images"] / png["decode_in_memory_s"]
    png["decode_cifar10_size_s"] = CIFAR10_IMAGES / png["decode_images_per_second"]
    first = ["--dataset", "imagefolder", "--data-dir", str(root), "--max-memory", "1K",
             "--handler", f"{ROOT}/bench/images.py:stop_after_first_iteration"]
    png["cold"] = train(first, tmp, tmp / "process-cache")  # decodes, writes the cache
    png["warm"] = train(first, tmp, tmp / "process-cache")  # maps it
    png["first_epoch_decode_cost_s"] = (png["cold"]["first_iteration_after_start_s"]
                                        - png["warm"]["first_iteration_after_start_s"])
    results["png"] = png
    return results


def rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(measure, value) rows, shared with bench/run.py's table."""
    c, p = results["cifar10"], results["png"]
    n = p["png_images"]
    return [
        (f"CIFAR-10 ({c['train_images']} train images, 3 x 32 x 32), convnet, no augmentation",
         f"{c['plain']['images_per_second']:.0f} images/s ({c['plain']['images_per_cpu_second']:.0f} per CPU-second)"),
        ("CIFAR-10, convnet, --augment", f"{c['augment']['images_per_second']:.0f} images/s "
                                         f"({c['augment']['images_per_cpu_second']:.0f} per CPU-second; "
                                         f"{100 * c['augment_cpu_cost']:+.1f}% CPU time)"),
        (f"PNG decode into memory ({n} 32 x 32 files; every run that fits --max-memory)",
         f"{p['decode_in_memory_s']:.2f} s ({p['decode_images_per_second']:.0f} images/s)"),
        (f"same, scaled to CIFAR-10's {CIFAR10_IMAGES} images", f"{p['decode_cifar10_size_s']:.1f} s"),
        (f"PNG decode into the disk cache ({n} files; first run over --max-memory)",
         f"{p['decode_to_disk_cache_s']:.2f} s"),
        (f"map the existing disk cache ({n} files; every later run)", f"{p['map_existing_cache_s']:.3f} s"),
        (f"process start to first iteration, {n} PNGs, cold (decode + write cache)",
         f"{p['cold']['first_iteration_after_start_s']:.2f} s"),
        (f"process start to first iteration, {n} PNGs, warm (map cache)",
         f"{p['warm']['first_iteration_after_start_s']:.2f} s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 + 1,000 CIFAR-10 images, 2,000 + 400 PNGs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ignite-app-bench-images-") as tmp:
        results = measure(Path(tmp), quick=args.quick)
    results.update(machine=f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end",
                   omp_num_threads=os.environ.get("OMP_NUM_THREADS"), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   command=" ".join(["python", "bench/images.py", *sys.argv[1:]]), table=rows(results))
    (Path(__file__).parent / "images_results.json").write_text(json.dumps(results, indent=2))
    for name, value in results["table"]:
        print(f"{name:<80} {value}")


if __name__ == "__main__":
    main()
