"""Your own images end to end: a generated ImageFolder of coloured shapes trains, reports, exports and predicts;
a SIGKILLed --augment run resumes bit-exactly from the on-disk cache; a torchvision model trains and exports."""
import json
import re

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from helpers import ROOT, clean_env, inspect_records, inspect_summary, offline_runs, run_script, run_train
from image_data import SHAPES, make_shapes_folder, write_fake_cifar10

pytestmark = pytest.mark.e2e

KILL = str(ROOT / "tests" / "user_handlers.py") + ":kill_at"
# 216 training images / 16 = 14 iterations per epoch, 42 in all; a checkpoint every 5 iterations
FINAL = "checkpoint_42.pt"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_folder(tmp_path_factory.mktemp("data") / "shapes", train_per_class=80, test_per_class=20, size=16)


def args_for(shapes):
    return ["--dataset", "imagefolder", "--data-dir", str(shapes), "--epochs", "3", "--batch-size", "16", "--augment",
            "--checkpoint-every", "5", "--no-progress-bar", "--watch", "off", "--log-interval", "5"]


def env_for(tmp_path):
    return clean_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shapes):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = run_train(args_for(shapes), tmp, env=env_for(tmp))
    return tmp, proc


def final_checkpoint(tmp_path):
    (path,) = (tmp_path / "runs").glob(f"*/checkpoints/{FINAL}")
    return torch.load(path, map_location="cpu", weights_only=True)


def test_imagefolder_trains_reports_exports_and_predicts(uninterrupted, shapes):
    tmp, proc = uninterrupted
    assert "216 train / 24 validation / 60 test images of 3 x 16 x 16, 3 classes" in proc.stdout
    (run_dir,) = offline_runs(tmp)
    summary = inspect_summary(run_dir)
    assert summary["summary"]["test/accuracy"] >= 0.9
    assert summary["config"]["data"]["classes"] == list(SHAPES) and summary["config"]["data"]["size"] == [16, 16]
    assert len(summary["config"]["data"]["mean"]) == 3
    # the class names travel into the checkpoint and the ONNX file, which takes 3 x 16 x 16 float pixels
    assert final_checkpoint(tmp)["data"]["classes"] == list(SHAPES)
    out = tmp / "runs" / summary["run_id"]
    assert summary["summary"]["onnx/verified"] is True and summary["summary"]["onnx/max_abs_diff"] <= 1e-4
    proto = onnx.load(str(out / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == list(SHAPES) and (meta["channels"], meta["height"], meta["width"]) == ("3", "16", "16")
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 16, 16]

    # the test report: printed, CSV, PNG, W&B
    assert re.search(r"Test report: accuracy [01]\.\d{4} on 60 images", proc.stdout)
    assert re.search(r"circle\s+\d\.\d{3}\s+\d\.\d{3}\s+20\s+\|", proc.stdout)
    csv_rows = (out / "test_report.csv").read_text().splitlines()
    assert csv_rows[0].startswith("class,precision,recall,accuracy,f1,support,predicted circle") and len(csv_rows) == 4
    assert sum(int(row.split(",")[5]) for row in csv_rows[1:]) == 60
    assert (out / "test_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keys = {k for r in inspect_records(run_dir) if r["type"] == "history" for k in r["history"]["item"]}
    assert any(k.startswith("test/confusion_matrix_table") for k in keys) and any(k.startswith("test/per_class") for k in keys)

    # predict.py on a directory: class names, and the same accuracy as the run's own test evaluation
    predicted = run_script("predict.py", [str(out / "model.onnx"), str(shapes / "test")], tmp, env=env_for(tmp))
    lines = [line for line in predicted.stdout.splitlines() if ".png:" in line]
    assert len(lines) == 60
    right = sum(line.split("/")[-2] == line.split(": ")[1].split()[0] for line in lines)
    assert right / 60 == pytest.approx(summary["summary"]["test/accuracy"])


def test_sigkill_with_augment_resumes_bit_exact_from_the_disk_cache(uninterrupted, shapes, tmp_path):
    """Killed mid-epoch 2 and resumed, reading through DataLoader workers from the memory-mapped cache
    (--max-memory 1K): the same final weights and metrics as the uninterrupted in-memory run."""
    args = [*args_for(shapes), "--max-memory", "1K", "--num-workers", "1"]
    crashed = run_train([*args, "--handler", KILL, "--handler-arg", "iteration=23"], tmp_path, env=env_for(tmp_path),
                        check=False)
    assert crashed.returncode == -9
    assert "memory-mapped from the cache file" in crashed.stdout and list((tmp_path / "cache").rglob("*.u8"))
    resumed = run_train([*args, "--auto-resume"], tmp_path, env=env_for(tmp_path))
    assert "at iteration 20" in resumed.stdout
    expected, actual = final_checkpoint(uninterrupted[0]), final_checkpoint(tmp_path)
    assert expected["model"].keys() == actual["model"].keys()
    assert all(torch.equal(expected["model"][k], actual["model"][k]) for k in expected["model"])
    s_full = inspect_summary(offline_runs(uninterrupted[0])[0])["summary"]
    s_resumed = inspect_summary(offline_runs(tmp_path)[-1])["summary"]
    for key in ("test/accuracy", "test/loss", "validation/accuracy", "validation/loss"):
        assert s_resumed[key] == s_full[key], key


def test_torchvision_resnet18_at_a_small_size_trains_and_exports(shapes, tmp_path):
    """One epoch of resnet18 on 24 x 24 resized images: it trains, exports, and (barely trained, so it errs) fills the
    test report's worst-images table and the hard-examples handler's table with colour images."""
    proc = run_train(["--dataset", "imagefolder", "--data-dir", str(shapes), "--model", "resnet18", "--image-size", "24",
                      "--epochs", "1", "--batch-size", "64", "--no-progress-bar", "--watch", "off",
                      "--handler", "hard-examples"], tmp_path, env=env_for(tmp_path))
    assert "of 3 x 24 x 24, 3 classes" in proc.stdout
    (run_dir,) = offline_runs(tmp_path)
    summary = inspect_summary(run_dir)
    assert summary["config"]["model"] == "resnet18" and summary["summary"]["onnx/verified"] is True
    (onnx_file,) = (tmp_path / "runs").glob("*/model.onnx")
    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert (meta["channels"], meta["height"], meta["width"]) == ("3", "24", "24")
    assert summary["summary"]["test/accuracy"] < 1.0  # 4 steps of resnet18 (seeded): it errs, so the tables fill
    keys = {k for r in inspect_records(run_dir) if r["type"] == "history" for k in r["history"]["item"]}
    assert any(k.startswith("test/worst_images") for k in keys)
    assert any(k.startswith("validation/hard_examples") for k in keys)
    (table,) = (run_dir / "files" / "media" / "table" / "test").glob("worst_images_*.table.json")
    assert json.loads(table.read_text())["columns"] == ["image", "true", "predicted", "probability", "loss"]
    # W&B stores a table that holds images as a `run_table` artifact, the PNGs inside it (the run's own
    # media/table JSON only names the column type)
    tables = [r["artifact"] for r in inspect_records(run_dir)
              if r["type"] == "artifact" and r["artifact"]["type"] == "run_table"]
    for name in ("worst_images", "hard_examples"):  # both tables hold colour images: RGB PNGs, not one channel
        pngs = [c["local_path"] for a in tables if name in a["name"] for c in a["manifest"]["contents"]
                if c["path"].startswith("media/images/") and c["path"].endswith(".png")]
        assert pngs, name
        for png in pngs:  # staged for `wandb sync` in W&B's artifact staging directory
            with Image.open(png) as image:
                assert image.mode == "RGB" and image.size == (24, 24), (name, image.mode, image.size)
                pixels = np.asarray(image, dtype=np.int16)
            assert (pixels[..., 0] != pixels[..., 2]).any(), name  # the shapes' hues, not grey
    (per_class,) = (run_dir / "files" / "media" / "table" / "test").glob("per_class_*.table.json")
    assert json.loads(per_class.read_text())["columns"] == ["class", "precision", "recall", "accuracy", "f1", "support"]


# ---------------------------------------------------------------- CIFAR-10 through torchvision's class

# 250 training images (50 per data_batch_N file), 20% held out: 200 / 32 = 7 iterations per epoch, 14 in all
CIFAR_ARGS = ["--epochs", "2", "--batch-size", "32", "--val-fraction", "0.2", "--augment", "--checkpoint-every", "4",
              "--no-progress-bar", "--watch", "off", "--log-interval", "5"]
CIFAR_FINAL = "checkpoint_14.pt"


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """Fake CIFAR-10 files in torchvision's layout (cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta)."""
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"), train_per_batch=50, test=100)


def test_cifar10_trains_reports_exports_and_resumes_bit_exact(cifar, tmp_path):
    """`--dataset cifar10` read by torchvision's CIFAR10 class from --data-dir (no download): it trains on 3 x 32 x 32,
    prints and writes the test report, exports a verified ONNX model of that shape, and a run SIGKILLed in epoch 2
    resumes (--auto-resume) to the uninterrupted run's weights and metrics."""
    args = ["--dataset", "cifar10", "--data-dir", str(cifar), *CIFAR_ARGS]
    full, crash = tmp_path / "full", tmp_path / "crash"
    full.mkdir(), crash.mkdir()
    proc = run_train(args, full, env=env_for(full))
    assert f"cifar10 (200 train / 50 validation / 100 test images of 3 x 32 x 32, 10 classes, from {cifar})" in proc.stdout
    (run_dir,) = offline_runs(full)
    summary = inspect_summary(run_dir)
    assert summary["config"]["data"]["classes"][:2] == ["airplane", "automobile"]
    assert summary["config"]["data"]["size"] == [32, 32] and len(summary["config"]["data"]["mean"]) == 3
    assert summary["summary"]["test/accuracy"] >= 0.9  # the red channel encodes the label
    out = full / "runs" / summary["run_id"]
    assert re.search(r"Test report: accuracy [01]\.\d{4} on 100 images", proc.stdout)
    assert len((out / "test_report.csv").read_text().splitlines()) == 1 + 10
    assert (out / "test_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["summary"]["onnx/verified"] is True
    proto = onnx.load(str(out / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert (meta["channels"], meta["height"], meta["width"]) == ("3", "32", "32") and json.loads(meta["classes"])[9] == "truck"
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 32, 32]

    crashed = run_train([*args, "--no-onnx", "--handler", KILL, "--handler-arg", "iteration=10"],
                        crash, env=env_for(crash), check=False)
    assert crashed.returncode == -9
    resumed = run_train([*args, "--no-onnx", "--auto-resume"], crash, env=env_for(crash))
    assert "at iteration 8" in resumed.stdout
    (path,) = (full / "runs").glob(f"*/checkpoints/{CIFAR_FINAL}")
    expected = torch.load(path, map_location="cpu", weights_only=True)
    (path,) = (crash / "runs").glob(f"*/checkpoints/{CIFAR_FINAL}")
    actual = torch.load(path, map_location="cpu", weights_only=True)
    assert expected["model"].keys() == actual["model"].keys()
    assert all(torch.equal(expected["model"][k], actual["model"][k]) for k in expected["model"])
    s_resumed = inspect_summary(offline_runs(crash)[-1])["summary"]
    for key in ("test/accuracy", "test/loss", "validation/accuracy", "validation/loss"):
        assert s_resumed[key] == summary["summary"][key], key
