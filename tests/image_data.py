"""Image datasets the tests write: an ImageFolder of simple coloured shapes, and CIFAR-10 files in torchvision's layout."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

SHAPES = ("circle", "square", "triangle")
# each class leans to one hue, with random variation, so both shape and colour carry the label
HUES = {"circle": (220, 60, 60), "square": (60, 200, 80), "triangle": (70, 90, 230)}


def draw_shape(kind: str, size: int, rng: np.random.Generator, mode: str = "RGB"):
    """One image: a noisy background and a shape of the class's colour at a random place and scale."""
    from PIL import Image, ImageDraw

    background = tuple(int(v) for v in rng.integers(0, 90, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    colour = tuple(int(np.clip(c + rng.integers(-40, 41), 0, 255)) for c in HUES[kind])
    r = rng.uniform(0.25, 0.4) * size
    cx, cy = rng.uniform(r, size - r, 2)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    noise = rng.integers(-12, 13, (size, size, 3))
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
    return image.convert(mode) if mode != "RGB" else image


def make_shapes_folder(root: Path, train_per_class: int = 80, test_per_class: int = 20, size: int = 16,
                       val_per_class: int = 0, seed: int = 0, classes: Sequence[str] = SHAPES) -> Path:
    """root/{train,test[,val]}/CLASS/NNN.png; returns root."""
    rng = np.random.default_rng(seed)
    counts = {"train": train_per_class, "test": test_per_class, "val": val_per_class}
    for split, n in counts.items():
        for kind in classes:
            if not n:
                continue
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_shape(kind, size, rng).save(folder / f"{i:04d}.png")
    return root


def write_fake_cifar10(root: Path, train_per_batch: int = 20, test: int = 30, seed: int = 0) -> Path:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}, pickled as CIFAR-10's own files are
    (latin1-readable dicts of uint8 rows of 3072 values, channel-major, and their labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def batch(n: int, name: str) -> None:
        labels = [int(x) for x in rng.integers(0, 10, n)]
        # each class a colour of its own (red: the label x 25, green and blue other multiples of 25), plus noise
        code = np.array(labels, dtype=np.uint8)
        colour = np.stack([code, (code * 7) % 10, (code * 3 + 5) % 10], axis=1) * 25
        data = np.repeat(colour, 1024, axis=1).astype(np.uint8)
        data[:, 1024:] += rng.integers(0, 16, (n, 2048), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]}, f)

    for i in range(1, 6):
        batch(train_per_batch, f"data_batch_{i}")
    batch(test, "test_batch")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": train_per_batch, "num_vis": 3072}, f)
    return root
