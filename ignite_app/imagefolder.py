"""`--dataset imagefolder --data-dir DIR`: your own PNG/JPEG files in torchvision's ImageFolder layout.

    DIR/train/CLASS/*.png|jpg|...      required; class names are the folder names, in sorted order
    DIR/test/CLASS/...                 required; only classes that train/ has
    DIR/val/CLASS/...                  optional; else the validation split is carved from train/ by --val-fraction

Every image is decoded once (threads in parallel; PIL releases the GIL while decoding), converted to the dataset's
channel count (1 when every file is grayscale, else 3) and resized to one size, into one uint8 array: a tensor in
memory when it fits `--max-memory`, else a memory-mapped cache file under ~/.cache/ignite-app/images/ whose name is
a digest of the folder's listing (paths, sizes, modification times) and of the target shape, so any change to the
folder makes a new file (the stale one is removed). Training then gathers whole batches from that array, as for the
built-in datasets: no PIL work on the hot path.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ignite_app.errors import UserError

SPLIT_DIRS = ("train", "val", "test")
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
DEFAULT_MEMORY_FRACTION = 0.25
CACHE_FORMAT = 2  # 2: 16-bit images scaled by their bit depth (1: by 257 only when the image's own max was > 255)


def image_extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ignite-app" / "images"


def default_memory_budget() -> int:
    """A quarter of the machine's RAM: room for the model, the loader's batches and everything else."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(total * DEFAULT_MEMORY_FRACTION)


# ---------------------------------------------------------------- one image


def sixteen_bit_source(image) -> bool:
    """Whether an image's mode-"I" pixels (32-bit integers) hold 16-bit values, from what the file's header told PIL
    (call it before the pixels are loaded: PIL drops the decoder's description then): a raw mode of I;16* (16-bit PNG
    in older Pillow, 16-bit signed TIFF, 16-bit PGM), or any PGM/PPM, which PIL reads as 0..65535 when maxval > 255."""
    if image.format == "PPM":
        return True
    for tile in getattr(image, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else "")
        if raw.startswith("I;16"):
            return True
    return False


def to_array(image, channels: int, size: tuple[int, int], int_scale: float = 257.0) -> np.ndarray:
    """A PIL image -> uint8 (channels, H, W): 16-bit scaled to 8, palette/alpha/CMYK converted as torchvision's
    pil_loader does (`convert("RGB")`), resized with PIL's antialiased bilinear filter. predict.py uses this too,
    so a prediction sees pixels prepared exactly like the training images. `int_scale`: the divisor for mode-"I"
    pixels whose bit depth the file does not say (see `int_scale_of`)."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # A 16-bit mode is scaled by its depth (65535 -> 255), never by the image's own maximum: a dark 16-bit frame
        # (max 1000) must stay dark (4), not be read as 8-bit and clipped to white; mode "I" is 16-bit when the
        # header says so, else the dataset's one int_scale decides, so every image of a dataset gets the same scale.
        if image.mode == "F":
            scale = 1.0
        elif image.mode == "I" and not sixteen_bit_source(image):
            scale = int_scale
        else:
            scale = 257.0
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8), "L")
    target = "L" if channels == 1 else "RGB"
    if image.mode != target:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "palette images with transparency ..." : converted all the same
            image = image.convert(target)
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def read_image(path: str, channels: int, size: tuple[int, int], int_scale: float = 257.0) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return to_array(image, channels, size, int_scale)


def _unknown_int_max(path: str) -> int:
    """The largest pixel of a mode-"I" file whose header does not say its bit depth (32-bit TIFF, ...), else -1."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode != "I" or sixteen_bit_source(image):
            return -1
        return int(np.asarray(image).max(initial=0))


def int_scale_of(paths: Sequence[str]) -> float:
    """One divisor for all the mode-"I" images of unknown bit depth among `paths`, decided once for the dataset:
    1 when none of them exceeds 255 (8-bit values stored as 32-bit integers), else 257 (16-bit values). Only such
    files are decoded here (rare: 32-bit integer TIFFs); an unreadable file counts as none."""
    peaks = _parallel(lambda p: _try(_unknown_int_max, p), paths) if paths else []
    found = [peak for peak in peaks if not isinstance(peak, Exception) and peak >= 0]
    return 1.0 if found and max(found) <= 255 else 257.0


def peek(path: str) -> tuple[tuple[int, int], str]:
    """((height, width), mode) from the file's header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        return (height, width), image.mode


# ---------------------------------------------------------------- the folder


@dataclass
class FolderListing:
    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[tuple[str, int]]]  # split -> [(path, class index)], sorted

    @property
    def all_files(self) -> list[tuple[str, int]]:
        return [item for split in SPLIT_DIRS for item in self.files.get(split, [])]


def _bad_layout(message: str, root: Path) -> UserError:
    return UserError(
        f"{message}. --dataset imagefolder expects {root}/train/CLASS/*.png (or .jpg, ...) and {root}/test/CLASS/..., "
        "optionally val/CLASS/..., one folder per class with the same class names in each."
    )


def list_folder(data_dir: str) -> FolderListing:
    """Find the splits, classes and image files; every layout problem is a UserError before anything is decoded."""
    from torchvision.datasets.folder import find_classes, make_dataset

    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise _bad_layout(f"--data-dir {root} is not a directory", root)
    if not (root / "train").is_dir():
        raise _bad_layout(f"{root} has no train/ folder", root)
    if not (root / "test").is_dir():
        raise _bad_layout(f"{root} has no test/ folder (the official test set is evaluated once at the end)", root)
    extensions = image_extensions()
    files: dict[str, list[tuple[str, int]]] = {}
    classes: tuple[str, ...] = ()
    for split in SPLIT_DIRS:
        directory = root / split
        if not directory.is_dir():
            continue
        try:
            names, _ = find_classes(str(directory))
        except FileNotFoundError:
            raise _bad_layout(f"{directory} holds no class folders, so no images at all", root) from None
        if split == "train":
            classes = tuple(names)
        else:
            unknown = sorted(set(names) - set(classes))
            if unknown:
                raise _bad_layout(f"{directory} has classes that train/ lacks: {', '.join(unknown)}", root)
        class_to_idx = {name: classes.index(name) for name in names}
        items = make_dataset(str(directory), class_to_idx, extensions=extensions, allow_empty=True)
        counts = Counter(label for _, label in items)
        if not items:
            raise _bad_layout(f"no images at all in {directory} (looked for {', '.join(extensions)})", root)
        empty = [name for name in names if counts[class_to_idx[name]] == 0]
        if empty:
            raise _bad_layout(f"the class folder(s) {', '.join(str(directory / n) for n in empty)} hold no images "
                              f"(looked for {', '.join(extensions)}); remove them or add images", root)
        files[split] = items
    return FolderListing(root, classes, files)


def _parallel(fn: Callable, items: Sequence) -> list:
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 2)) as pool:
        return list(pool.map(fn, items))


def _try(fn: Callable, path: str):
    try:
        return fn(path)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
        return exc


def _unreadable(path: str, exc: BaseException) -> UserError:
    return UserError(
        f"Cannot read the image {path} ({type(exc).__name__}: {exc}). Remove or replace the file, or pass "
        "--skip-bad-images to skip unreadable files (they are counted and reported)."
    )


@dataclass
class Geometry:
    channels: int
    size: tuple[int, int]  # (height, width)
    bad: list[str]  # unreadable headers, when skipping
    int_scale: float = 257.0  # the divisor of mode-"I" pixels of unknown bit depth (int_scale_of)


def decide_geometry(listing: FolderListing, image_size: Optional[int], skip_bad: bool) -> Geometry:
    """The dataset's channel count (1 when every image is grayscale, else 3) and size (--image-size, else the most
    common size among the training images), from the files' headers."""
    paths = [path for path, _ in listing.all_files]
    headers = _parallel(lambda p: _try(peek, p), paths)
    bad = []
    for path, header in zip(paths, headers):
        if isinstance(header, Exception):
            if not skip_bad:
                raise _unreadable(path, header)
            bad.append(path)
    good = [h for h in headers if not isinstance(h, Exception)]
    train_paths = {p for p, _ in listing.files["train"]}
    train_sizes = [h[0] for p, h in zip(paths, headers) if p in train_paths and not isinstance(h, Exception)]
    if not train_sizes:
        raise _bad_layout(f"none of the images in {listing.root / 'train'} can be read", listing.root)
    channels = 1 if all(mode in GRAYSCALE_MODES for _, mode in good) else 3
    size = (image_size, image_size) if image_size else Counter(train_sizes).most_common(1)[0][0]
    int_scale = int_scale_of([p for p, h in zip(paths, headers) if not isinstance(h, Exception) and h[1] == "I"])
    return Geometry(channels, size, bad, int_scale)


# ---------------------------------------------------------------- decoding into one array


def _decode_into(target: np.ndarray, paths: Sequence[str], geometry: Geometry, skip_bad: bool) -> list[int]:
    """Decode every file into target[i]; returns the indices that could not be decoded (when skipping)."""
    skipped = set(geometry.bad)

    def work(i: int):
        if paths[i] in skipped:
            return i
        try:
            target[i] = read_image(paths[i], geometry.channels, geometry.size, geometry.int_scale)
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data shows up only when decoding
            if not skip_bad:
                return (i, exc)
            return i
        return None

    failed = []
    for outcome in _parallel(work, range(len(paths))):
        if isinstance(outcome, tuple):
            raise _unreadable(paths[outcome[0]], outcome[1])
        if outcome is not None:
            failed.append(outcome)
    return failed


def _listing_digest(listing: FolderListing, image_size: Optional[int], skip_bad: bool) -> str:
    """Names the cache: any added, removed, renamed, rewritten or touched file gives another digest."""
    digest = hashlib.sha256(f"{CACHE_FORMAT} {image_size} {skip_bad}".encode())
    for split in SPLIT_DIRS:
        for path, label in listing.files.get(split, []):
            stat = os.stat(path)
            digest.update(f"{split}\0{os.path.relpath(path, listing.root)}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


@dataclass
class Decoded:
    """All splits' images in one uint8 array (N, C, H, W) and their labels (-1: skipped), split boundaries."""

    images: torch.Tensor
    labels: torch.Tensor
    bounds: dict[str, tuple[int, int]]
    where: str  # "memory" or the cache file


def _bounds(listing: FolderListing) -> dict[str, tuple[int, int]]:
    bounds, start = {}, 0
    for split in SPLIT_DIRS:
        n = len(listing.files.get(split, []))
        if n:
            bounds[split] = (start, start + n)
            start += n
    return bounds


def decode_in_memory(listing: FolderListing, geometry: Geometry, skip_bad: bool) -> Decoded:
    files = listing.all_files
    images = torch.empty((len(files), geometry.channels, *geometry.size), dtype=torch.uint8)
    failed = _decode_into(images.numpy(), [p for p, _ in files], geometry, skip_bad)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    labels[failed] = -1
    return Decoded(images, labels, _bounds(listing), "memory")


@dataclass
class DiskCache:
    """The cache files of one folder listing: `STEM.u8` (the raw array) and `STEM.json` (shape, labels, geometry)."""

    directory: Path
    folder_key: str  # the folder's path: a changed folder replaces its own older cache, not other folders'
    stem: str

    @classmethod
    def of(cls, listing: FolderListing, image_size: Optional[int], skip_bad: bool,
           directory: Optional[Path] = None) -> "DiskCache":
        folder_key = hashlib.sha256(str(listing.root.resolve()).encode()).hexdigest()[:12]
        return cls(directory or cache_root(), folder_key, f"{folder_key}-{_listing_digest(listing, image_size, skip_bad)}")

    @property
    def data(self) -> Path:
        return self.directory / f"{self.stem}.u8"

    @property
    def meta(self) -> Path:
        return self.directory / f"{self.stem}.json"

    def lock(self):
        from filelock import FileLock

        self.directory.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.directory / f"{self.folder_key}.lock"))  # two runs on one folder decode it once

    def read(self, listing: FolderListing) -> Optional[tuple["Decoded", Geometry]]:
        """The mapped array when this listing was decoded before, else None."""
        if not (self.data.is_file() and self.meta.is_file()):
            return None
        meta = json.loads(self.meta.read_text())
        shape = tuple(meta["shape"])
        # copy-on-write mapping: writable for torch.from_numpy (no warning), and nothing ever changes the file
        images = torch.from_numpy(np.memmap(self.data, dtype=np.uint8, mode="c", shape=shape))
        labels = torch.tensor(meta["labels"], dtype=torch.int64)
        return Decoded(images, labels, _bounds(listing), str(self.data)), Geometry(shape[1], tuple(shape[2:]), [])

    def write(self, listing: FolderListing, geometry: Geometry, skip_bad: bool) -> None:
        for stale in self.directory.glob(f"{self.folder_key}-*"):  # the folder changed: the old cache is useless
            stale.unlink(missing_ok=True)
        files = listing.all_files
        shape = (len(files), geometry.channels, *geometry.size)
        partial = self.directory / f"{self.stem}.partial"
        array = np.memmap(partial, dtype=np.uint8, mode="w+", shape=shape)
        try:
            failed = _decode_into(array, [p for p, _ in files], geometry, skip_bad)
            array.flush()
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            del array
        labels = [label for _, label in files]
        for i in failed:
            labels[i] = -1
        os.replace(partial, self.data)
        meta = {"format": CACHE_FORMAT, "shape": shape, "labels": labels, "root": str(listing.root)}
        partial_meta = self.meta.with_suffix(".json.partial")
        partial_meta.write_text(json.dumps(meta))
        os.replace(partial_meta, self.meta)


def decode(listing: FolderListing, image_size: Optional[int], skip_bad: bool, budget: int,
           cache_dir: Optional[Path] = None) -> tuple[Decoded, Geometry]:
    """An existing cache of this very listing is mapped (read into memory when it now fits the budget); else the
    headers decide the geometry and the files are decoded into memory, or into a new cache when over budget."""
    cache = DiskCache.of(listing, image_size, skip_bad, cache_dir)
    found = cache.read(listing)
    if found is None:
        geometry = decide_geometry(listing, image_size, skip_bad)
        n_bytes = len(listing.all_files) * geometry.channels * geometry.size[0] * geometry.size[1]
        if n_bytes <= budget:
            return decode_in_memory(listing, geometry, skip_bad), geometry
        with cache.lock():
            found = cache.read(listing)
            if found is None:
                cache.write(listing, geometry, skip_bad)
                found = cache.read(listing)
    decoded, geometry = found
    if decoded.images.numel() <= budget:
        decoded = Decoded(decoded.images.clone(), decoded.labels, decoded.bounds, "memory")
    return decoded, geometry


# ---------------------------------------------------------------- splits


@dataclass
class MappedSplit:
    """A split whose images stay in the memory-mapped cache: `rows` index the shared array, batches are gathered
    from it (page cache, then disk) in the loader's worker processes, which inherit the mapping."""

    store: torch.Tensor  # (N_all, C, H, W) uint8, backed by the cache file
    rows: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.store[self.rows[index]], self.labels[index]

    def subset(self, index: torch.Tensor) -> "MappedSplit":
        return MappedSplit(self.store, self.rows[index], self.labels[index])

    @property
    def images(self) -> torch.Tensor:
        """The whole split read into memory (for the small consumers: hard examples, predict --split)."""
        return self.store[self.rows]

    def head(self, n: int) -> torch.Tensor:
        return self.store[self.rows[:n]]


@dataclass
class FolderData:
    train: object
    val: Optional[object]  # None: carve it from train
    test: object
    classes: tuple[str, ...]
    channels: int
    size: tuple[int, int]
    where: str
    skipped: list[str]


def load_folder(data_dir: str, image_size: Optional[int] = None, max_memory: Optional[int] = None,
                skip_bad: bool = False, cache_dir: Optional[Path] = None) -> FolderData:
    """List, check, decode (once) and split an ImageFolder tree; see the module docstring."""
    from ignite_app.data import TensorSplit

    listing = list_folder(data_dir)
    budget = default_memory_budget() if max_memory is None else max_memory
    decoded, geometry = decode(listing, image_size, skip_bad, budget, cache_dir)
    bad_rows = (decoded.labels < 0).nonzero().flatten().tolist()
    paths = [p for p, _ in listing.all_files]
    splits = {}
    for split, (start, end) in decoded.bounds.items():
        keep = (decoded.labels[start:end] >= 0).nonzero().flatten() + start
        if len(keep) == 0:
            raise _bad_layout(f"none of the images in {listing.root / split} can be read", listing.root)
        if decoded.where == "memory":
            whole = len(keep) == end - start  # a view, no copy, when nothing was skipped
            images = decoded.images[start:end] if whole else decoded.images[keep]
            splits[split] = TensorSplit(images, decoded.labels[keep])
        else:
            splits[split] = MappedSplit(decoded.images, keep, decoded.labels[keep])
    return FolderData(
        train=splits["train"], val=splits.get("val"), test=splits["test"], classes=listing.classes,
        channels=geometry.channels, size=geometry.size, where=decoded.where, skipped=[paths[i] for i in bad_rows],
    )
