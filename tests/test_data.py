"""Datasets: bundled digits, the system Fashion-MNIST files, the lookup order and its error, the batch sampler."""
import gzip
import shutil

import pytest
import torch

from helpers import FMNIST_SYSTEM_DIR
from ignite_app.data import EpochShuffleBatchSampler, load_splits, load_torchvision, make_loaders
from ignite_app.errors import UserError

needs_fmnist = pytest.mark.skipif(not FMNIST_SYSTEM_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")


def test_digits_are_28x28_uint8_with_fixed_test_set_and_seeded_validation():
    a = load_splits("digits", None, 0.1, seed=1)
    b = load_splits("digits", None, 0.1, seed=2)
    assert a.train.images.dtype == torch.uint8 and a.train.images.shape[1:] == (1, 28, 28)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.val.labels, b.val.labels) or not torch.equal(a.val.images, b.val.images)
    assert torch.equal(load_splits("digits", None, 0.1, seed=1).val.images, a.val.images)


def test_loaders_yield_whole_uint8_batches():
    splits = load_splits("digits", None, 0.1, seed=0)
    loaders = make_loaders(splits, 64, 500, seed=0, num_workers=0, pin_memory=False)
    x, y = next(iter(loaders.train))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert sum(len(b[1]) for b in loaders.val) == len(splits.val)


def test_batch_order_is_a_function_of_seed_and_epoch_and_can_start_mid_epoch():
    s = EpochShuffleBatchSampler(100, 10, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.start_batch = 4
    assert list(s) == full[4:]
    assert list(s) == full  # start_batch is used once
    s.set_epoch(3)
    assert list(s) != full
    state = torch.get_rng_state()
    list(s)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


@needs_fmnist
def test_fashion_mnist_comes_from_the_system_directory(tmp_path):
    train, test, source = load_torchvision("fashion-mnist", None, cache_dir=tmp_path, allow_download=False)
    assert source == str(FMNIST_SYSTEM_DIR)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert set(test.labels.tolist()) == set(range(10))


@needs_fmnist
def test_data_dir_comes_before_the_system_directory(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for f in FMNIST_SYSTEM_DIR.glob("*.gz"):  # an uncompressed copy, as a user might keep it
        with gzip.open(f) as src, open(mine / f.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    _, _, source = load_torchvision("fashion-mnist", str(mine), cache_dir=tmp_path / "cache", allow_download=False)
    assert source == str(mine)


@needs_fmnist
def test_corrupt_system_file_is_a_user_error(tmp_path):
    fake = tmp_path / "fashion-mnist"
    fake.mkdir()
    for f in FMNIST_SYSTEM_DIR.glob("*.gz"):
        shutil.copy(f, fake / f.name)
    (fake / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_torchvision("fashion-mnist", None, system_dirs=[tmp_path], cache_dir=tmp_path / "cache", allow_download=False)


def test_missing_dataset_error_lists_what_was_tried(tmp_path):
    with pytest.raises(UserError) as exc:
        load_torchvision("mnist", str(tmp_path), system_dirs=[tmp_path / "sys"], cache_dir=tmp_path / "c", allow_download=False)
    message = str(exc.value)
    assert str(tmp_path) in message and str(tmp_path / "sys" / "mnist") in message
    assert "--data-dir" in message and "--dataset digits" in message
