"""Datasets as uint8 tensors in memory, the train/val/test split, and loaders that yield whole batches.

Images are decoded once (torchvision reads the IDX files straight into a uint8 tensor; no PIL per item)
and normalized per batch inside the model (`models.Normalize`), so the hot path is tensor indexing only.

Where files come from, in order: `--data-dir`; the system dataset directory (Debian's `dataset-fashion-mnist`
puts the IDX files under /usr/share/datasets/fashion-mnist/); a download into the cache.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from ignite_app.errors import UserError

SYSTEM_DATA_DIRS = (Path("/usr/share/datasets"),)
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    mean: tuple[float, ...]  # per channel, of pixel values scaled to [0, 1], over the training images
    std: tuple[float, ...]
    classes: tuple[str, ...]
    channels: int = 1
    size: tuple[int, int] = (28, 28)  # (height, width) of every image the model sees

    def state_dict(self) -> dict:
        """What a checkpoint and the W&B config keep of the data: class names, shape and normalization."""
        return {"name": self.name, "classes": list(self.classes), "channels": self.channels, "size": list(self.size),
                "mean": list(self.mean), "std": list(self.std)}


DATASET_INFO = {
    "mnist": DatasetInfo("mnist", 10, (0.1307,), (0.3081,), tuple(str(i) for i in range(10))),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, (0.2860,), (0.3530,),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "digits": DatasetInfo("digits", 10, (0.3053,), (0.3247,), tuple(str(i) for i in range(10))),
}


@dataclass
class TensorSplit:
    """Images (N, C, H, W) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # DataLoader hands us a whole batch of indices: one gather instead of a per-item collate.
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]

    def subset(self, index: torch.Tensor) -> "TensorSplit":
        return TensorSplit(self.images[index], self.labels[index])

    def head(self, n: int) -> torch.Tensor:
        return self.images[:n]


@dataclass
class Splits:
    train: TensorSplit  # or an imagefolder.MappedSplit: same interface, images in a memory-mapped cache
    val: TensorSplit
    test: TensorSplit
    info: DatasetInfo
    source: str  # where the files were found, for the start-up message
    notes: tuple[str, ...] = ()  # what the start-up message should add (skipped files, the cache file)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ignite-app" / "data"


# ---------------------------------------------------------------- loading


def load_digits() -> tuple[TensorSplit, TensorSplit]:
    """scikit-learn's bundled 8x8 digits, scaled to 0..255 and resized to 28x28; a fixed 20% is the test set."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    pixels = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    images = F.interpolate(pixels, size=(28, 28), mode="bilinear", align_corners=False).round().clamp(0, 255)
    data = TensorSplit(images.to(torch.uint8), torch.tensor(digits.target, dtype=torch.int64))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    n_test = len(data) // 5
    return data.subset(order[n_test:]), data.subset(order[:n_test])


def _torchvision_class(name: str):
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]


def _read_torchvision(cls, root: Path, download: bool) -> tuple[TensorSplit, TensorSplit]:
    splits = []
    for train in (True, False):
        ds = cls(root=str(root), train=train, download=download)
        splits.append(TensorSplit(ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64)))
    return splits[0], splits[1]


def _find_flat_idx(directory: Path) -> Optional[dict[str, Path]]:
    """The four IDX files lying directly in `directory`, gzipped or not (the system package's layout)."""
    found = {}
    for stem in IDX_FILES:
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            return None
    return found


def _stage_flat_idx(cls, files: dict[str, Path], cache_root: Path) -> Path:
    """Extract/copy flat IDX files into torchvision's layout under `cache_root` (Debian recompresses the .gz
    files, so torchvision's archive md5s cannot apply; the IDX headers are checked when the files are read)."""
    import gzip
    import shutil

    raw = cache_root / cls.__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem, path in files.items():
        target = raw / stem
        if target.is_file() and target.stat().st_mtime >= path.stat().st_mtime:
            continue
        partial = target.with_suffix(".partial")
        try:
            with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as exc:
            partial.unlink(missing_ok=True)
            raise UserError(
                f"The dataset file {path} cannot be read ({exc}); it is corrupt or truncated. "
                "Reinstall it, or point --data-dir at a good copy."
            ) from None
        partial.replace(target)
    return cache_root


def _read_checked(cls, root: Path, origin: Path) -> tuple[TensorSplit, TensorSplit]:
    try:
        train, test = _read_torchvision(cls, root, download=False)
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise UserError(
            f"The {cls.__name__} IDX files from {origin} are not valid ({exc}). Reinstall them, or point --data-dir "
            "at a good copy."
        ) from None
    if len(train.images) != len(train.labels) or len(test.images) != len(test.labels):
        raise UserError(f"The {cls.__name__} IDX files from {origin} hold different numbers of images and labels.")
    return train, test


def load_torchvision(
    name: str,
    data_dir: Optional[str],
    system_dirs: Sequence[Path] = SYSTEM_DATA_DIRS,
    cache_dir: Optional[Path] = None,
    allow_download: bool = True,
) -> tuple[TensorSplit, TensorSplit, str]:
    """Try --data-dir, then the system directories, then a download; returns (train, test, where it was found)."""
    cls = _torchvision_class(name)
    cache_root = cache_dir or default_cache_dir()
    tried: list[str] = []
    candidates: list[Path] = []
    if data_dir:
        candidates += [Path(data_dir), Path(data_dir) / name]
    candidates += [d / name for d in system_dirs]
    for directory in candidates:
        if (directory / cls.__name__ / "raw").is_dir():
            try:
                return (*_read_torchvision(cls, directory, download=False), str(directory))
            except RuntimeError:
                pass
        files = _find_flat_idx(directory)
        if files:
            return (*_read_checked(cls, _stage_flat_idx(cls, files, cache_root), directory), str(directory))
        tried.append(f"{directory} (no {cls.__name__} IDX files)")
    download_root = Path(data_dir) if data_dir else cache_root
    if (download_root / cls.__name__ / "raw").is_dir():
        try:
            return (*_read_torchvision(cls, download_root, download=False), str(download_root))
        except RuntimeError:
            pass
    if allow_download and not os.environ.get("IGNITE_APP_NO_DOWNLOAD"):
        try:
            return (*_read_torchvision(cls, download_root, download=True), f"download into {download_root}")
        except (RuntimeError, OSError) as exc:
            first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            tried.append(f"download into {download_root} (failed: {first_line})")
    else:
        tried.append("download (disabled by IGNITE_APP_NO_DOWNLOAD or the caller)")
    hint = "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist), " if name == "fashion-mnist" else ""
    raise UserError(
        f"Could not find the {name} dataset. Tried: {'; '.join(tried)}. To fix it, {hint}put the four IDX files "
        f"({', '.join(IDX_FILES)}, optionally .gz) in a directory and pass --data-dir DIR, or train on the bundled "
        "scikit-learn digits with --dataset digits."
    )


def load_splits(name: str, data_dir: Optional[str], val_fraction: float, seed: int, image_size: Optional[int] = None,
                max_memory: Optional[int] = None, skip_bad_images: bool = False, **lookup) -> Splits:
    """Train/val/test tensors; the validation split is carved from the training set by `seed` (unless an
    imagefolder brings its own val/)."""
    from ignite_app import imagefolder

    val, notes = None, []
    if name == "imagefolder":
        if not data_dir:
            raise UserError("--dataset imagefolder needs --data-dir DIR (with train/CLASS/*.png and test/CLASS/...).")
        folder = imagefolder.load_folder(data_dir, image_size, max_memory, skip_bad_images, lookup.get("cache_dir"))
        train_full, val, test, source = folder.train, folder.val, folder.test, str(Path(data_dir))
        if folder.skipped:
            notes.append(f"skipped {len(folder.skipped)} unreadable image(s) (--skip-bad-images): "
                         + ", ".join(folder.skipped[:5]) + (", ..." if len(folder.skipped) > 5 else ""))
        if folder.val is not None:  # the folder's own val/ is the validation split, whole: --val-fraction is not used
            notes.append(f"validation images from {Path(data_dir) / 'val'} (--val-fraction not used)")
        if folder.where != "memory":
            notes.append(f"decoded images memory-mapped from the cache file {folder.where}")
        base = DatasetInfo(name, len(folder.classes), (), (), folder.classes, folder.channels, folder.size)
    else:
        if name == "digits":
            train_full, test, source = *load_digits(), "scikit-learn's bundled digits"
        elif name == "cifar10":
            train_full, test, source, classes = load_cifar10(data_dir, **lookup)
        else:
            train_full, test, source = load_torchvision(name, data_dir, **lookup)
        if image_size and tuple(train_full.images.shape[-2:]) != (image_size, image_size):
            train_full, test = resize_split(train_full, image_size), resize_split(test, image_size)
        channels, size = train_full.images.shape[1], tuple(train_full.images.shape[-2:])
        base = DATASET_INFO.get(name) or DatasetInfo(name, len(classes), (), (), classes)
        base = dataclasses.replace(base, channels=channels, size=size)
    if val is None:
        order = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(round(len(train_full) * val_fraction)))
        train, val = train_full.subset(order[n_val:]), train_full.subset(order[:n_val])
    else:
        train = train_full
    if not base.mean:  # computed once from the training split; kept in the model's Normalize layer
        mean, std = channel_stats(train)
        base = dataclasses.replace(base, mean=mean, std=std)
    return Splits(train, val, test, base, source, tuple(notes))


def splits_from_config(config, **lookup) -> Splits:
    """load_splits with everything the config says about the data."""
    from ignite_app.config import parse_size

    return load_splits(config.dataset, config.data_dir, config.val_fraction, config.seed, image_size=config.image_size,
                       max_memory=parse_size(config.max_memory) if config.max_memory else None,
                       skip_bad_images=config.skip_bad_images, **lookup)


def verification_images(splits: Splits, count: int = 64) -> torch.Tensor:
    """Real images to check an ONNX export against PyTorch: validation, then test images, repeated when a small
    dataset has fewer than `count` (at least the largest of config.ONNX_VERIFY_BATCH_SIZES), so no --val-fraction is
    too small for the verification."""
    images = torch.cat([splits.val.head(count), splits.test.head(count)])[:count]
    return images.repeat(-(-count // len(images)), 1, 1, 1)[:count]


def channel_stats(split, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels scaled to [0, 1], in float64, a chunk at a time (the split may be mapped)."""
    total = total_sq = None
    count = 0
    for start in range(0, len(split), chunk):
        images, _ = split.__getitems__(list(range(start, min(start + chunk, len(split)))))
        values = images.to(torch.float64).div_(255.0).transpose(0, 1).flatten(1)
        sums, squares = values.sum(1), values.square().sum(1)
        total = sums if total is None else total + sums
        total_sq = squares if total_sq is None else total_sq + squares
        count += values.shape[1]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(round(float(m), 6) for m in mean), tuple(max(round(float(s), 6), 1e-3) for s in std)


def resize_split(split: TensorSplit, size: int, chunk: int = 2048) -> TensorSplit:
    """A built-in dataset at --image-size: antialiased bilinear resizing of the uint8 tensors, once."""
    from torchvision.transforms.v2 import functional as TF

    parts = [TF.resize(split.images[i : i + chunk], [size, size], antialias=True) for i in range(0, len(split), chunk)]
    return TensorSplit(torch.cat(parts), split.labels)


# ---------------------------------------------------------------- CIFAR-10


CIFAR_FOLDER = "cifar-10-batches-py"


def _cifar10_class(check_md5: bool):
    from torchvision.datasets import CIFAR10

    if check_md5:
        return CIFAR10

    class LocalCIFAR10(CIFAR10):
        """CIFAR10 reading files already on disk without torchvision's md5 check of the archive's batches: a user's
        copy may be re-pickled (and tests write small ones); the arrays are checked for shape when read instead."""

        train_list = [[name, None] for name, _ in CIFAR10.train_list]  # torchvision: md5 None = only check it exists
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return LocalCIFAR10


def _read_cifar10(root: Path, download: bool) -> tuple[TensorSplit, TensorSplit, tuple[str, ...]]:
    cls = _cifar10_class(check_md5=download)
    splits = []
    for train in (True, False):
        ds = cls(root=str(root), train=train, download=download)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits.append(TensorSplit(images, torch.tensor(ds.targets, dtype=torch.int64)))
    return splits[0], splits[1], tuple(ds.classes)


def load_cifar10(
    data_dir: Optional[str], system_dirs: Sequence[Path] = SYSTEM_DATA_DIRS, cache_dir: Optional[Path] = None,
    allow_download: bool = True,
) -> tuple[TensorSplit, TensorSplit, str, tuple[str, ...]]:
    """CIFAR-10 with the MNIST lookup chain: --data-dir (holding cifar-10-batches-py/, or DIR/cifar10/...), the system
    directory, the cache, a download; one clear error naming what was tried."""
    candidates: list[Path] = []
    if data_dir:
        candidates += [Path(data_dir), Path(data_dir) / "cifar10"]
    candidates += [d / "cifar10" for d in system_dirs]
    download_root = Path(data_dir) if data_dir else (cache_dir or default_cache_dir())
    candidates.append(download_root)
    tried = []
    for directory in dict.fromkeys(candidates):
        if (directory / CIFAR_FOLDER).is_dir():
            try:
                train, test, classes = _read_cifar10(directory, download=False)
            except Exception as exc:  # noqa: BLE001 - a bad pickle raises anything (UnpicklingError, KeyError, ...)
                raise UserError(f"The CIFAR-10 files in {directory / CIFAR_FOLDER} cannot be read ({type(exc).__name__}: "
                                f"{exc}); they are corrupt or incomplete. Delete them to download again, or point "
                                "--data-dir at a good copy.") from None
            return train, test, str(directory), classes
        tried.append(f"{directory} (no {CIFAR_FOLDER}/)")
    if allow_download and not os.environ.get("IGNITE_APP_NO_DOWNLOAD"):
        try:
            train, test, classes = _read_cifar10(download_root, download=True)
            return train, test, f"download into {download_root}", classes
        except (RuntimeError, OSError) as exc:
            first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            tried.append(f"download into {download_root} (failed: {first_line})")
    else:
        tried.append("download (disabled by IGNITE_APP_NO_DOWNLOAD or the caller)")
    raise UserError(
        f"Could not find the cifar10 dataset. Tried: {'; '.join(tried)}. To fix it, extract torchvision's "
        f"cifar-10-python.tar.gz so that DIR/{CIFAR_FOLDER}/data_batch_1 exists and pass --data-dir DIR, or train on "
        "the bundled scikit-learn digits with --dataset digits."
    )


# ---------------------------------------------------------------- loaders


class EpochShuffleBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose order is a pure function of (seed, epoch), startable at any batch, shared by ranks.

    Written by hand because torch's RandomSampler draws from the global RNG and Ignite's ReproducibleBatchSampler
    draws its permutation lazily after a resume has restored the RNG; both break bit-exact mid-epoch resumes. And
    torch's DistributedSampler shards the dataset before batching (pads with duplicates, and its rank shards hold
    other samples than one process's batches), while here `batch_size` is the global batch: every rank draws the same
    (seed, epoch) order and takes every `num_replicas`-th index of each global batch, so N ranks see exactly the
    samples one process would, every rank yields the same number of batches, and one `start_batch` resumes them all.
    The trainer calls `set_epoch` on EPOCH_STARTED (Ignite's Engine does not); a resume sets `start_batch` once.
    """

    def __init__(self, size: int, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 1
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.size + self.batch_size - 1) // self.batch_size

    def global_batch_len(self, index: int) -> int:
        """How many samples global batch `index` of an epoch holds, over all ranks (the last one may be partial)."""
        return min(self.batch_size, self.size - index * self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        start, self.start_batch = self.start_batch, 0
        for first in range(start * self.batch_size, self.size, self.batch_size):
            yield order[first : first + self.batch_size][self.rank :: self.num_replicas].tolist()


def check_global_batch(size: int, batch_size: int, world_size: int) -> None:
    """Every rank needs at least one sample of every global batch, the epoch's last (partial) one included."""
    last = size % batch_size or batch_size
    if world_size > 1 and batch_size < world_size:
        raise UserError(f"--batch-size {batch_size} is the global batch, split across {world_size} processes: each "
                        f"needs at least one sample of it. Use a --batch-size of at least {world_size}.")
    if world_size > 1 and min(batch_size, last) < world_size:
        raise UserError(
            f"--batch-size {batch_size} is the global batch, split across {world_size} processes, but the last batch "
            f"of an epoch ({size} training samples) holds only {last} sample(s): some processes would get none. "
            f"Choose a --batch-size whose remainder of {size} is 0 or at least {world_size}."
        )


def shard(split: TensorSplit, rank: int, world_size: int) -> TensorSplit:
    """This rank's contiguous share of an evaluation split: no sample twice, none padded (Ignite's metrics all-reduce
    sums, so any duplicate would count twice)."""
    if world_size == 1:
        return split
    n = len(split)
    return split.subset(torch.arange(rank * n // world_size, (rank + 1) * n // world_size))


def _batch_collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


def make_loader(split: TensorSplit, batch_size: int, shuffle_seed: Optional[int], num_workers: int, pin_memory: bool,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader that fetches whole batches by one tensor gather; shuffled by epoch when a seed is given.

    With several processes, `batch_size` is global: a shuffled loader yields this rank's share of each global batch,
    a sequential (evaluation) one this rank's shard of the split in batches of batch_size / world_size."""
    if shuffle_seed is None:
        split = shard(split, rank, world_size)
        batches: Sampler = torch.utils.data.BatchSampler(
            torch.utils.data.SequentialSampler(range(len(split))), -(-batch_size // world_size), drop_last=False
        )
    else:
        batches = EpochShuffleBatchSampler(len(split), batch_size, shuffle_seed, world_size, rank)
    return DataLoader(
        split,
        batch_sampler=batches,
        collate_fn=_batch_collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # its own generator: creating an iterator must not advance the global RNG (bit-exact resumes)
        generator=torch.Generator().manual_seed(0),
    )


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader


def make_loaders(splits: Splits, batch_size: int, val_batch_size: int, seed: int, num_workers: int, pin_memory: bool,
                 rank: int = 0, world_size: int = 1) -> Loaders:
    check_global_batch(len(splits.train), batch_size, world_size)
    if min(len(splits.val), len(splits.test)) < world_size:
        raise UserError(f"The validation or test split holds fewer samples than the {world_size} processes; raise "
                        "--val-fraction or run fewer processes.")
    shared = dict(num_workers=num_workers, pin_memory=pin_memory, rank=rank, world_size=world_size)
    return Loaders(
        train=make_loader(splits.train, batch_size, seed, **shared),
        val=make_loader(splits.val, val_batch_size, None, **shared),
        test=make_loader(splits.test, val_batch_size, None, **shared),
    )
