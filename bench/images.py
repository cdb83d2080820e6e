"""Benchmark of your own images: a generated CIFAR-sized ImageFolder (32 x 32 RGB PNGs, 10 classes).

    .venv/bin/python bench/images.py            # 50,000 train + 10,000 test images (CIFAR-10's size); ~5 min on 2 cores
    .venv/bin/python bench/images.py --quick    # 10,000 + 2,000

Measures (1) the one-time decoding cost: PNG files -> one uint8 array, in memory and into the memory-mapped disk
cache, and a second run that maps the cache without decoding; (2) training throughput (images/s of one epoch of
the default convnet, Ignite's own epoch timing) with and without --augment. Writes bench/images_results.json and
prints a table. `measure(tmp, train_per_class, test_per_class)` is what bench/run.py can call.
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


def generate(root: Path, train_per_class: int, test_per_class: int, size: int = 32) -> float:
    """Seconds to write the folder: coloured shapes (tests/image_data.py's), 10 classes of shape x hue."""
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
    """Seconds for each way of reading the folder once (what the first epoch of a run pays, or not)."""
    from ignite_app.imagefolder import load_folder

    out: dict[str, float] = {}
    for label, kwargs in (("decode_in_memory_s", {}), ("decode_to_disk_cache_s", {"max_memory": 1}),
                          ("map_existing_cache_s", {"max_memory": 1})):
        start = time.perf_counter()
        folder = load_folder(str(root), cache_dir=cache, **kwargs)
        out[label] = time.perf_counter() - start
        out["images"] = len(folder.train) + len(folder.test)
    return out


def train_throughput(root: Path, tmp: Path, augment: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp), WANDB_SILENT="true", XDG_CACHE_HOME=str(tmp / "cache"))
    cmd = [PY, str(ROOT / "scripts/train.py"), "--dataset", "imagefolder", "--data-dir", str(root), "--epochs", "1",
           "--no-progress-bar", "--no-onnx", "--watch", "off", "--output-dir", str(tmp / "runs"),
           "--handler", f"{ROOT}/bench/probes.py:training_time", *(["--augment"] if augment else [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    values: dict[str, Any] = {}
    for match in re.finditer(r"BENCH (\{.*?\})\s*$", proc.stdout, re.MULTILINE):
        values.update(json.loads(match.group(1)))
    train_images = int(re.search(r"\((\d+) train[ ,/]", proc.stdout).group(1))
    return {"images_per_second": train_images / values["train_seconds"], "train_seconds": values["train_seconds"],
            "process_wall_s": wall}


def measure(tmp: Path, train_per_class: int = 5000, test_per_class: int = 1000) -> dict[str, Any]:
    root = tmp / "folder"
    results: dict[str, Any] = {"train_images": 10 * train_per_class, "test_images": 10 * test_per_class,
                               "generate_s": generate(root, train_per_class, test_per_class)}
    results.update(decode_costs(root, tmp / "cache"))
    results["decode_images_per_second"] = results["images"] / results["decode_in_memory_s"]
    results["train_plain"] = train_throughput(root, tmp, augment=False)
    results["train_augment"] = train_throughput(root, tmp, augment=True)
    results["augment_cost"] = (results["train_plain"]["images_per_second"]
                               / results["train_augment"]["images_per_second"] - 1.0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 + 2,000 images instead of CIFAR-10's 50,000 + 10,000")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ignite-app-bench-images-"))
    results = measure(tmp, *((1000, 200) if args.quick else (5000, 1000)))
    results.update(machine=f"{os.cpu_count()} CPU cores", date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   command=" ".join(["python", "bench/images.py", *sys.argv[1:]]))
    (Path(__file__).parent / "images_results.json").write_text(json.dumps(results, indent=2))
    rows = [
        ("images (train + test), 32 x 32 RGB PNG", f"{results['images']}"),
        ("decode once into memory (first epoch's extra cost)", f"{results['decode_in_memory_s']:.1f} s "
                                                               f"({results['decode_images_per_second']:.0f} images/s)"),
        ("decode once into the disk cache", f"{results['decode_to_disk_cache_s']:.1f} s"),
        ("later runs: map the existing cache", f"{results['map_existing_cache_s']:.2f} s"),
        ("training, convnet, no augmentation", f"{results['train_plain']['images_per_second']:.0f} images/s"),
        ("training, convnet, --augment", f"{results['train_augment']['images_per_second']:.0f} images/s "
                                         f"({100 * results['augment_cost']:+.1f}% time)"),
    ]
    for name, value in rows:
        print(f"{name:<55} {value}")


if __name__ == "__main__":
    main()
