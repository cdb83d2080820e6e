"""Your own images, in process: ImageFolder reading (modes, sizes, bad files, layout errors), the disk cache, CIFAR-10
from files in torchvision's layout, per-channel normalization, augmentation, torchvision models, the test report."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import clean_env
from image_data import make_shapes_folder, write_fake_cifar10
from ignite_app import imagefolder
from ignite_app.augment import BatchAugment
from ignite_app.data import load_cifar10, load_splits
from ignite_app.errors import UserError
from ignite_app.main import main
from ignite_app.models import Normalize, build_model, describe_models


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_folder(tmp_path_factory.mktemp("shapes"), train_per_class=12, test_per_class=4, size=12)


def save(path: Path, image: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


# ---------------------------------------------------------------- reading folders


def test_mixed_modes_and_sizes_become_the_datasets_channels_and_most_common_size(tmp_path):
    red = Image.new("RGB", (10, 10), (255, 0, 0))
    save(tmp_path / "train/a/rgb.png", red)
    save(tmp_path / "train/a/rgba.png", Image.new("RGBA", (10, 10), (255, 0, 0, 128)))
    save(tmp_path / "train/a/palette.png", red.convert("P"))
    save(tmp_path / "train/a/cmyk.jpg", red.convert("CMYK"), quality=100)
    save(tmp_path / "train/b/gray16.png", Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16)))
    save(tmp_path / "train/b/gray.png", Image.new("L", (10, 10), 128))
    save(tmp_path / "train/b/big.png", Image.new("RGB", (40, 20), (0, 0, 255)))  # resized to 10 x 10
    save(tmp_path / "test/a/small.bmp", Image.new("RGB", (5, 7), (255, 0, 0)))
    save(tmp_path / "test/b/la.png", Image.new("LA", (10, 10), (200, 255)))
    folder = imagefolder.load_folder(str(tmp_path), max_memory=None)
    assert folder.classes == ("a", "b") and folder.channels == 3 and folder.size == (10, 10)
    train = folder.train
    assert train.images.shape == (7, 3, 10, 10) and train.images.dtype == torch.uint8
    by_name = dict(zip(sorted(["rgb", "rgba", "palette", "cmyk"]) + ["big", "gray", "gray16"], train.images))
    for name in ("rgb", "rgba", "palette"):
        assert by_name[name][:, 5, 5].tolist() == [255, 0, 0], name
    assert by_name["cmyk"][0, 5, 5] > 240 and by_name["cmyk"][1:, 5, 5].max() < 20
    assert by_name["gray16"][:, 5, 5].tolist() == [255, 255, 255]  # 16-bit scaled, not clipped garbage
    assert by_name["gray"][:, 5, 5].tolist() == [128, 128, 128]
    assert by_name["big"][:, 5, 5].tolist() == [0, 0, 255]
    assert train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert folder.test.images.shape == (2, 3, 10, 10) and folder.test.images[1, :, 0, 0].tolist() == [200] * 3


def gray16(value: int) -> Image.Image:
    return Image.fromarray(np.full((6, 6), value, dtype=np.uint16))  # mode I;16


def test_16_bit_images_are_scaled_by_their_depth_not_by_their_own_maximum(tmp_path):
    """A dark 16-bit frame stays dark (1000 / 257 -> 4, 250 / 257 -> 1): it was read as 8-bit (250 -> 250, nearly
    white) when its own maximum was <= 255. Also for mode "I" files whose header says 16 bits (a 16-bit PGM)."""
    save(tmp_path / "train/dark/a.png", gray16(1000))
    save(tmp_path / "train/dark/b.png", gray16(250))
    save(tmp_path / "train/dark/c.pgm", gray16(250))  # PIL reads a 16-bit PGM as mode "I"
    save(tmp_path / "train/bright/a.png", gray16(65535))
    save(tmp_path / "test/dark/a.png", gray16(0))
    with Image.open(tmp_path / "train/dark/c.pgm") as pgm, Image.open(tmp_path / "train/dark/a.png") as png:
        assert (pgm.mode, png.mode) == ("I", "I;16")  # both paths are taken
    folder = imagefolder.load_folder(str(tmp_path))
    assert folder.channels == 1
    assert folder.train.images[:, 0, 3, 3].tolist() == [255, 4, 1, 1]  # bright/a, dark/a, dark/b, dark/c
    assert imagefolder.read_image(str(tmp_path / "train/dark/b.png"), 3, (6, 6))[:, 0, 0].tolist() == [1, 1, 1]


@pytest.mark.parametrize("values, expected", [((200, 17), [200, 17]), ((200, 60000), [1, 233])])
def test_32_bit_integer_images_of_unknown_depth_get_one_scale_per_dataset(tmp_path, values, expected):
    """32-bit integer TIFFs do not say whether they hold 8- or 16-bit values: when none exceeds 255 they are 8-bit
    (200 -> 200), else all are 16-bit (200 -> 1), the same scale for every image of the dataset."""
    for name, value in zip("ab", values):
        save(tmp_path / f"train/{name}/0.tif", Image.fromarray(np.full((6, 6), value, dtype=np.int32)))
    save(tmp_path / "test/a/0.png", Image.new("L", (6, 6), 9))
    with Image.open(tmp_path / "train/a/0.tif") as tif:
        assert tif.mode == "I" and not imagefolder.sixteen_bit_source(tif)
    folder = imagefolder.load_folder(str(tmp_path))
    assert folder.train.images[:, 0, 3, 3].tolist() == expected
    from ignite_app.predict import read_images  # predict.py decides the same way over the files it is given

    paths = [str(tmp_path / f"train/{name}/0.tif") for name in "ab"]
    assert read_images(paths, 1, (6, 6))[:, 0, 3, 3].tolist() == expected


def test_a_val_folder_is_the_validation_split_and_val_fraction_is_not_used(tmp_path):
    """DIR/val/CLASS/... is the validation split, whole: the split sizes come from the folders, whatever
    --val-fraction says, and the start-up notes say so."""
    root = make_shapes_folder(tmp_path / "data", train_per_class=5, test_per_class=2, val_per_class=3, size=8)
    for fraction in (0.1, 0.5):
        splits = load_splits("imagefolder", str(root), fraction, 0)
        assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 9, 6)
        assert splits.val.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert any("--val-fraction not used" in note and str(root / "val") in note for note in splits.notes)
    val_file = imagefolder.read_image(str(root / "val/square/0001.png"), 3, (8, 8))
    assert torch.equal(splits.val.images[4], torch.tensor(val_file))  # the val/ images themselves, in order
    no_val = load_splits("imagefolder", str(make_shapes_folder(tmp_path / "plain", 5, 2, size=8)), 0.2, 0)
    assert (len(no_val.train), len(no_val.val)) == (12, 3) and not any("val" in n for n in no_val.notes)


def test_an_all_grayscale_folder_has_one_channel_and_image_size_resizes(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for cls in ("x", "y"):
            for i in range(n):
                save(tmp_path / split / cls / f"{i}.png", Image.new("L", (8, 6), 40 * i))
    folder = imagefolder.load_folder(str(tmp_path), image_size=5)
    assert folder.channels == 1 and folder.size == (5, 5) and folder.train.images.shape == (6, 1, 5, 5)


def test_unreadable_file_is_named_or_skipped_and_counted(tmp_path, shapes):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shapes, root)
    (root / "train/circle/broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png") as exc:
        imagefolder.load_folder(str(root))
    assert "--skip-bad-images" in str(exc.value)
    splits = load_splits("imagefolder", str(root), 0.1, 0, skip_bad_images=True)
    assert len(splits.train) + len(splits.val) == 36 and any("skipped 1 unreadable" in n for n in splits.notes)
    (root / "train/circle/broken.png").unlink()
    truncated = root / "train/square/0000.png"
    truncated.write_bytes(truncated.read_bytes()[:60])  # the header reads, the pixels do not
    with pytest.raises(UserError, match="0000.png"):
        imagefolder.load_folder(str(root), skip_bad=False)
    assert len(imagefolder.load_folder(str(root), skip_bad=True).skipped) == 1


@pytest.mark.parametrize("layout, fragment", [
    ("no-train", "has no train/ folder"),
    ("no-test", "has no test/ folder"),
    ("empty-class", "hold no images"),
    ("no-images", "no images at all"),
    ("extra-test-class", "classes that train/ lacks: zebra"),
])
def test_bad_layouts_exit_2_before_anything_is_written(tmp_path, monkeypatch, capsys, layout, fragment):
    root = tmp_path / "data"
    if layout != "no-train":
        save(root / "train/cat/0.png", Image.new("RGB", (8, 8)))
    if layout != "no-test":
        save(root / "test/cat/0.png", Image.new("RGB", (8, 8)))
    if layout == "empty-class":
        (root / "train/dog").mkdir()
    if layout == "no-images":
        for png in root.rglob("*.png"):
            png.with_suffix(".txt").write_text("notes")
            png.unlink()
    if layout == "extra-test-class":
        save(root / "test/zebra/0.png", Image.new("RGB", (8, 8)))
    root.mkdir(exist_ok=True)
    assert_exit_2(tmp_path, monkeypatch, capsys, ["--data-dir", str(root)], fragment)


@pytest.mark.parametrize("args, fragment", [
    (["--image-size", "0"], "--image-size must be at least 1"),
    (["--image-size", "10000"], "--image-size must be at most"),
    (["--data-dir", None], "--dataset imagefolder needs --data-dir"),
    (["--max-memory", "lots"], "--max-memory must be a size"),
    (["--model", "resnet9000"], "--model resnet9000: no such network"),
    (["--model", "net", "--image-size", "8"], "--model net needs images of at least 16 x 16"),
])
def test_bad_flags_exit_2_before_anything_is_written(tmp_path, monkeypatch, capsys, shapes, args, fragment):
    args = ["--data-dir", str(shapes), *args] if args[:2] != ["--data-dir", None] else []
    assert_exit_2(tmp_path, monkeypatch, capsys, args, fragment)


def assert_exit_2(tmp_path, monkeypatch, capsys, args, fragment):
    for key, value in clean_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    code = main(["--dataset", "imagefolder", *args, "--output-dir", str(tmp_path / "runs"), "--no-progress-bar"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "wandb").exists()


# ---------------------------------------------------------------- the disk cache


def test_disk_cache_holds_the_same_pixels_is_reused_and_invalidated(tmp_path, shapes):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shapes, root)
    cache = tmp_path / "cache"
    in_memory = load_splits("imagefolder", str(root), 0.2, 3)
    mapped = load_splits("imagefolder", str(root), 0.2, 3, max_memory=1, cache_dir=cache)
    assert type(mapped.train).__name__ == "MappedSplit" and any("cache file" in n for n in mapped.notes)
    for name in ("train", "val", "test"):
        a, b = getattr(in_memory, name), getattr(mapped, name)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert all(torch.equal(x, y) for x, y in zip(a.__getitems__([3, 0, 5]), b.__getitems__([3, 0, 5])))
    assert in_memory.info == mapped.info  # the same per-channel mean/std
    (first,) = cache.glob("*.u8")
    stamp = first.stat().st_mtime_ns
    load_splits("imagefolder", str(root), 0.2, 3, max_memory=1, cache_dir=cache)
    assert [p.stat().st_mtime_ns for p in cache.glob("*.u8")] == [stamp]  # reused, not decoded again
    Image.new("RGB", (12, 12), (9, 9, 9)).save(root / "train/circle/new.png")
    changed = load_splits("imagefolder", str(root), 0.2, 3, max_memory=1, cache_dir=cache)
    assert len(changed.train) + len(changed.val) == 37
    (second,) = cache.glob("*.u8")
    assert second != first and not first.exists()
    # an edited file (same name) and a removed one: a new cache each time, with the new pixels, the old one deleted
    Image.new("RGB", (12, 12), (250, 1, 1)).save(root / "test/circle/0000.png")
    edited = load_splits("imagefolder", str(root), 0.2, 3, max_memory=1, cache_dir=cache)
    assert edited.test.images[0, :, 5, 5].tolist() == [250, 1, 1]
    (third,) = cache.glob("*.u8")
    assert third != second and not second.exists()
    (root / "train/circle/new.png").unlink()
    removed = load_splits("imagefolder", str(root), 0.2, 3, max_memory=1, cache_dir=cache)
    assert len(removed.train) + len(removed.val) == 36
    (fourth,) = cache.glob("*.u8")
    assert fourth not in (first, second, third) and not third.exists()


# ---------------------------------------------------------------- export_onnx.py after the folder changed


def write_checkpoint(tmp_path: Path, root: Path) -> Path:
    """What a run writes and export_onnx.py reads: meta (config, run id), model weights, trainer state, the data entry
    (class names, shape, normalization); an untrained convnet, as export only needs the weights to match."""
    from ignite_app.config import Config
    from ignite_app.data import splits_from_config
    from ignite_app.state import FORMAT_VERSION

    config = Config(dataset="imagefolder", data_dir=str(root), kernels=(4, 8), val_fraction=0.2)
    info = splits_from_config(config).info
    torch.manual_seed(0)
    model = build_model("convnet", config.kernels, info.num_classes, info.mean, info.std, in_channels=info.channels,
                        image_size=info.size)
    path = tmp_path / "checkpoint_1.pt"
    torch.save({"meta": {"format_version": FORMAT_VERSION, "run_id": "abc", "config": config.to_dict()},
                "model": model.state_dict(), "trainer": {"iteration": 1, "epoch_length": 1, "max_epochs": 1},
                "data": info.state_dict()}, path)
    return path


def test_export_takes_classes_and_shape_from_the_checkpoint_not_from_the_folder_as_it_is_now(tmp_path, capsys):
    """The folder gained a class after training: the ONNX metadata still names the model's 3 classes (it was
    rebuilt with 4 outputs and refused as "another architecture"). When its images now have another size, the
    export is refused (exit 2, nothing written): the metadata would otherwise describe a shape the model never saw."""
    import onnx

    from ignite_app.export import export
    from ignite_app.main import guarded

    root = make_shapes_folder(tmp_path / "data", train_per_class=6, test_per_class=2, size=8)
    checkpoint = write_checkpoint(tmp_path, root)
    for split in ("train", "test"):
        save(root / split / "zebra/0.png", Image.new("RGB", (8, 8), (9, 9, 9)))
    out = tmp_path / "model.onnx"
    args = ["--checkpoint", str(checkpoint), "--output", str(out), "--exporter", "torchscript", "--opset", "17"]
    assert guarded("export_onnx.py", lambda: export(args)) == 0, capsys.readouterr().err
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == ["circle", "square", "triangle"]
    assert (meta["channels"], meta["height"], meta["width"]) == ("3", "8", "8")

    for i in range(30):  # the most common size is now 10 x 10
        save(root / "train/zebra" / f"big{i}.png", Image.new("RGB", (10, 10)))
    again = tmp_path / "again.onnx"
    args = ["--checkpoint", str(checkpoint), "--output", str(again), "--exporter", "torchscript", "--opset", "17"]
    assert guarded("export_onnx.py", lambda: export(args)) == 2
    err = capsys.readouterr().err
    assert "was trained on 3 x 8 x 8 images" in err and "now gives 3 x 10 x 10 images" in err and "Traceback" not in err
    assert not again.exists()


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_from_files_in_torchvisions_layout(tmp_path):
    write_fake_cifar10(tmp_path / "mine")
    train, test, source, classes = load_cifar10(str(tmp_path / "mine"), system_dirs=[], allow_download=False)
    assert source == str(tmp_path / "mine") and classes[0] == "airplane" and len(classes) == 10
    assert train.images.shape == (100, 3, 32, 32) and test.images.shape == (30, 3, 32, 32)
    assert torch.equal(train.images[:, 0, 0, 0], (train.labels * 25).to(torch.uint8))  # channels in place
    splits = load_splits("cifar10", str(tmp_path / "mine"), 0.1, 0, system_dirs=[], allow_download=False)
    assert splits.info.channels == 3 and splits.info.size == (32, 32) and len(splits.info.mean) == 3
    assert splits.info.classes == classes


def test_cifar10_missing_says_what_was_tried(tmp_path):
    with pytest.raises(UserError) as exc:
        load_cifar10(str(tmp_path), system_dirs=[tmp_path / "sys"], allow_download=False)
    assert str(tmp_path / "sys" / "cifar10") in str(exc.value) and "cifar-10-batches-py" in str(exc.value)


def test_corrupt_cifar10_file_is_a_user_error(tmp_path):
    write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot be read"):
        load_cifar10(str(tmp_path), system_dirs=[], allow_download=False)


# ---------------------------------------------------------------- models and normalization


def test_per_channel_normalize_keeps_the_grayscale_arithmetic_bit_for_bit():
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    old = pixels.float() * torch.tensor(1.0 / (255.0 * 0.3081)) - torch.tensor(0.1307 / 0.3081)
    assert torch.equal(Normalize(0.1307, 0.3081)(pixels), old)
    assert torch.equal(Normalize((0.1307,), (0.3081,))(pixels), old)
    rgb = Normalize((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    assert torch.allclose(rgb[0, :, 0, 0], torch.tensor([1.8, 1.6, 1.4]))


@pytest.mark.parametrize("name, channels, size", [("convnet", 3, (32, 32)), ("convnet", 1, (20, 24)), ("net", 3, (16, 16)),
                                                  ("resnet18", 1, (16, 16)), ("mobilenet_v3_small", 3, (32, 32))])
def test_models_adapt_to_channels_size_and_classes(name, channels, size):
    model = build_model(name, (4, 8), 7, (0.5,) * channels, (0.25,) * channels, in_channels=channels, image_size=size)
    assert model.eval()(torch.zeros(2, channels, *size)).shape == (2, 7)


def test_an_image_too_small_for_a_torchvision_model_is_a_clear_error():
    """squeezenet's first layer is an unpadded 3 x 3 convolution: a 2 x 2 image does not fit, and says so before any
    data is read, instead of a shape error in the first iteration."""
    with pytest.raises(UserError, match=r"--model squeezenet1_1 cannot take 3 x 2 x 2 images \(\w+: .+\)\. Pass a larger "
                                        r"--image-size"):
        build_model("squeezenet1_1", (4, 8), 3, (0.5,) * 3, (0.2,) * 3, in_channels=3, image_size=(2, 2))
    assert build_model("squeezenet1_1", (4, 8), 3, (0.5,) * 3, (0.2,) * 3, in_channels=3, image_size=(32, 32))


def test_image_size_resizes_a_builtin_dataset_once_into_uint8():
    """--image-size on a built-in dataset (data.resize_split): every split at the new size, still uint8, the same
    labels, and the same pictures (antialiased: the mean brightness is kept)."""
    plain = load_splits("digits", None, 0.1, 0)
    small = load_splits("digits", None, 0.1, 0, image_size=14)
    for name in ("train", "val", "test"):
        a, b = getattr(plain, name), getattr(small, name)
        assert b.images.shape == (len(a), 1, 14, 14) and b.images.dtype == torch.uint8, name
        assert torch.equal(a.labels, b.labels), name
        assert abs(a.images.float().mean() - b.images.float().mean()) < 1.0, name
    assert small.info.size == (14, 14) and small.info.channels == 1
    assert small.train.images.float().std() > 50  # not blurred to grey


def test_list_models_names_ours_and_torchvisions(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--list-models"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "convnet" in out and "resnet18" in out and "mobilenet_v3_small" in out
    assert describe_models() in out


def test_pretrained_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # a closed port: the download fails at once
    with pytest.raises(UserError, match="--pretrained: could not get torchvision's pretrained weights for resnet18"):
        build_model("resnet18", (16, 32), 3, (0.5,) * 3, (0.2,) * 3, in_channels=3, image_size=(32, 32), pretrained=True)


# ---------------------------------------------------------------- augmentation


def test_augmentation_is_a_pure_function_of_seed_and_iteration():
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    augment = BatchAugment(seed=5, image_size=(16, 16))
    state = torch.get_rng_state()
    a = augment(images, iteration=7)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
    assert torch.equal(a, BatchAugment(seed=5, image_size=(16, 16))(images, iteration=7))
    assert not torch.equal(a, augment(images, iteration=8)) and not torch.equal(a, BatchAugment(6, (16, 16))(images, 7))
    assert a.shape == images.shape and a.dtype == torch.uint8


def test_augmentation_crops_and_flips_each_image_on_its_own():
    ramp = (torch.arange(8, dtype=torch.uint8) + 1).repeat(8, 1)  # column index + 1 as value; padding is 0
    images = ramp.expand(200, 1, 8, 8).contiguous()
    out = BatchAugment(seed=0, image_size=(8, 8), padding=2)(images, iteration=1)
    padded_row = [0, 0, *range(1, 9), 0, 0]
    windows = {tuple(padded_row[i : i + 8]) for i in range(5)}
    rows = [tuple(row.tolist()) for row in out[:, 0, 4]]
    assert all(row in windows or row[::-1] in windows for row in rows)  # a crop of the padded image, maybe mirrored
    assert len(set(rows)) == 10  # every offset, mirrored and not, within one batch: parameters per image
    mirrored = sum(row not in windows for row in rows)
    assert 60 < mirrored < 140  # about half


# ---------------------------------------------------------------- the test report


def test_test_report_numbers_on_a_known_confusion_matrix(tmp_path):
    """10 test images of 3 classes, 7 right. Rows true, columns predicted: [[3, 1, 0], [0, 1, 1], [1, 0, 3]]; so
    precision 3/4, 1/2, 3/4 (columns), recall = per-class accuracy 3/4, 1/2, 3/4 (rows), accuracy 0.7."""
    from types import SimpleNamespace

    from ignite_app.handlers.test_report import TestReport

    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    printed: list[str] = []
    report = TestReport(["cat", "dog", "emu"], tmp_path, log=printed.append)
    engine = SimpleNamespace(state=SimpleNamespace(output=None))
    for batch in (slice(0, 6), slice(6, 10)):  # two batches, gathered in order
        engine.state.output = (torch.nn.functional.one_hot(predicted[batch], 3).float() * 4, labels[batch])
        report.collect(engine)
    r = report(engine)
    assert r["matrix"].tolist() == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert r["precision"].tolist() == [0.75, 0.5, 0.75] and r["recall"].tolist() == [0.75, 0.5, 0.75]
    assert r["support"].tolist() == [4, 2, 4] and r["accuracy"] == pytest.approx(0.7)
    table = printed[0].splitlines()
    assert table[0].startswith("Test report: accuracy 0.7000 on 10 images") and "recall is its accuracy" in table[0]
    assert table[1].split() == ["class", "precision", "recall", "support", "|", "predicted:", "0", "1", "2"]
    assert table[3].split() == ["dog", "0.500", "0.500", "2", "|", "1:", "0", "1", "1"]
    rows = (tmp_path / "test_report.csv").read_text().splitlines()
    assert rows[0] == "class,precision,recall,accuracy,f1,support,predicted cat,predicted dog,predicted emu"
    assert rows[1] == "cat,0.750000,0.750000,0.750000,0.750000,4,3,1,0"
    assert rows[2] == "dog,0.500000,0.500000,0.500000,0.500000,2,0,1,1"
    assert (tmp_path / "test_report.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_test_report_scores_equal_sklearns(seed):
    """The report counts with numpy (sklearn.metrics' import cost 0.6 CPU-s a run); sklearn is the oracle, with an
    empty class (no support and never predicted: zero_division=0) and a class predicted but never true."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from ignite_app.handlers.test_report import scores

    rng = np.random.default_rng(seed)
    k = 7
    labels = rng.choice([0, 1, 2, 3, 5], 300)  # 4 and 6 never true
    predicted = np.where(rng.random(300) < 0.6, labels, rng.choice([0, 1, 2, 3, 6], 300))  # 4 never predicted
    r = scores(labels, predicted, k)
    assert r["matrix"].tolist() == confusion_matrix(labels, predicted, labels=list(range(k))).tolist()
    expected = precision_recall_fscore_support(labels, predicted, labels=list(range(k)), zero_division=0)
    for name, values in zip(("precision", "recall", "f1", "support"), expected):
        np.testing.assert_allclose(r[name], values, rtol=1e-12, err_msg=name)
    assert r["accuracy"] == pytest.approx((labels == predicted).mean())
