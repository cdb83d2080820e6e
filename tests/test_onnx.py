"""ONNX export: the exporter functions, the handler (and its failure path), export_onnx.py and predict.py."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from ignite.engine import Engine, Events

from ignite_app.handlers.onnx_export import OnnxExportHandler
from helpers import QUICK, ROOT, inspect_records, inspect_summary, offline_runs, run_script, run_train
from ignite_app.data import load_splits
from ignite_app.models import build_model
from ignite_app.config import ONNX_OPSETS
from ignite_app.onnx_tools import OnnxVerificationError, export_and_verify, written_opset
from user_handlers import Unexportable


@pytest.fixture(scope="module")
def digits_images():
    return load_splits("digits", None, 0.1, seed=0).test.images


# the dynamo exporter (torch.export) takes ~2 s an export even for these tiny models (the torchscript one ~0.2 s): its
# exports are marked e2e to keep the fast tier fast; CI runs them
DYNAMO = pytest.param("dynamo", marks=pytest.mark.e2e)
EXPORTERS = [DYNAMO if exporter == "dynamo" else exporter for exporter in ONNX_OPSETS]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_export_has_a_dynamic_batch_and_matches_pytorch(tmp_path, digits_images, exporter):
    model = build_model("net", (16, 32), 10, 0.3, 0.3).eval()
    report = export_and_verify(model, digits_images, tmp_path / "m.onnx", opset=18, exporter=exporter,
                               batch_sizes=(1, 37, 64), metadata={"dataset": "digits"})
    assert report.verified and report.max_abs_diff <= 1e-4 and report.opset == 18
    proto = onnx.load(str(tmp_path / "m.onnx"))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic, not fixed
    assert {p.key: p.value for p in proto.metadata_props}["dataset"] == "digits"
    assert not list(tmp_path.glob("*.data"))  # self-contained


def run_handler(handler: OnnxExportHandler) -> Engine:
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0, 1], max_epochs=1)
    return engine


def test_handler_failure_keeps_the_run_alive(tmp_path, digits_images):
    handler = OnnxExportHandler(Unexportable(), digits_images, tmp_path, log=lambda m: None)
    engine = run_handler(handler)
    assert engine.state.iteration == 2 and handler.reports == [None]


def test_handler_failure_is_fatal_when_strict(tmp_path, digits_images):
    handler = OnnxExportHandler(Unexportable(), digits_images, tmp_path, strict=True, log=lambda m: None)
    with pytest.raises(torch.onnx.OnnxExporterError):
        run_handler(handler)


def test_handler_checks_its_arguments(tmp_path, digits_images):
    with pytest.raises(ValueError, match="37"):
        OnnxExportHandler(Unexportable(), digits_images[:5], tmp_path)
    with pytest.raises(ValueError, match="the dynamo exporter writes opsets 18 to 23, not opset 17"):
        OnnxExportHandler(Unexportable(), digits_images, tmp_path, opset=17)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_the_opset_asked_for_at_each_end_of_the_exporters_range_is_the_opset_written(tmp_path, digits_images, exporter):
    model = build_model("convnet", (4, 8), 10, 0.3, 0.3).eval()
    for opset in ONNX_OPSETS[exporter]:
        report = export_and_verify(model, digits_images, tmp_path / f"m{opset}.onnx", opset=opset, exporter=exporter)
        assert report.verified and written_opset(onnx.load(str(tmp_path / f"m{opset}.onnx"))) == opset


@pytest.mark.e2e  # a dynamo export
def test_an_opset_the_exporter_does_not_write_is_an_error_not_a_silent_18(tmp_path, digits_images):
    # below its range the dynamo exporter falls back to opset 18 when converting down fails; export_onnx checks
    model = build_model("convnet", (4, 8), 10, 0.3, 0.3).eval()
    with pytest.raises(OnnxVerificationError, match="wrote opset 18, not the 12 asked for"):
        export_and_verify(model, digits_images, tmp_path / "m.onnx", opset=12, exporter="dynamo")
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx_run")
    proc = run_train([*QUICK, "--onnx-on-best"], tmp)
    (run_dir,) = offline_runs(tmp)
    return tmp, run_dir, next((tmp / "runs").iterdir()), proc.stdout


@pytest.mark.e2e
def test_training_exports_verifies_and_logs_onnx(trained):
    _, run_dir, out, stdout = trained
    # the final export follows the test result: it is not on the path from launch to the result line
    assert stdout.index("Test results") < stdout.index(f"ONNX: {out / 'model.onnx'}")
    assert (out / "model.onnx").is_file() and (out / "model-best.onnx").is_file()
    summary = inspect_summary(run_dir)
    s = summary["summary"]
    assert s["onnx/verified"] is True and s["onnx/max_abs_diff"] <= 1e-4
    assert s["onnx/exporter"] == "dynamo" and s["onnx/opset"] == 18 and s["onnx/file_size_bytes"] > 10_000
    assert s["onnx_best/verified"] is True
    arts = [r["artifact"] for r in inspect_records(run_dir) if r["type"] == "artifact" and r["artifact"]["name"].startswith("onnx-")]
    assert {a["type"] for a in arts} == {"model"} and arts[-1]["aliases"] == ["latest"]
    assert any("best" in a["aliases"] for a in arts)
    assert (run_dir / "files" / "model.onnx").is_file()  # run.save


@pytest.mark.e2e
def test_failed_export_is_reported_and_training_finishes(tmp_path):
    handler = str(ROOT / "tests" / "user_handlers.py") + ":break_onnx"
    proc = run_train([*QUICK, "--epochs", "1", "--no-test-report", "--handler", handler], tmp_path)
    assert "ONNX export/verification failed" in proc.stdout and "Test results" in proc.stdout
    s = inspect_summary(offline_runs(tmp_path)[0])["summary"]
    assert s["onnx/verified"] is False and "failed" in s["onnx/error"] and "test/accuracy" in s
    assert list((tmp_path / "runs").glob("*/checkpoints/checkpoint_*.pt"))
    strict = run_train([*QUICK, "--epochs", "1", "--no-test-report", "--handler", handler, "--onnx-strict"], tmp_path,
                       check=False)
    assert strict.returncode == 1


@pytest.mark.e2e
def test_export_script_and_predict_script_agree_with_pytorch(trained, tmp_path):
    tmp, run_dir, out, _ = trained
    exported = tmp_path / "exported.onnx"
    proc = run_script("export_onnx.py", ["--checkpoint", str(out), "--output", str(exported)], tmp_path)
    assert "onnxruntime matches PyTorch" in proc.stdout
    again = run_script("export_onnx.py", ["--checkpoint", str(run_dir), "--output", str(exported)], tmp_path, check=False)
    assert again.returncode == 2 and "--force" in again.stderr

    pred = run_script("predict.py", [str(exported), "--split", "test"], tmp_path)
    accuracy_line = pred.stdout.strip().splitlines()[-1]
    correct, total = map(int, accuracy_line.split("(")[1].split(")")[0].split("/"))
    pytorch_accuracy = inspect_summary(run_dir)["summary"]["test/accuracy"]
    assert correct / total == pytorch_accuracy  # the final checkpoint is the model that was tested


@pytest.mark.e2e
def test_predict_on_image_files(trained, tmp_path, digits_images):
    from PIL import Image

    _, _, out, _ = trained
    files = []
    for i in range(3):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(digits_images[i, 0].numpy()).save(path)
        files.append(str(path))
    proc = run_script("predict.py", [str(out / "model.onnx"), *files], tmp_path)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and all(" p=" in line for line in lines) and lines[0].startswith(files[0])


@pytest.mark.e2e
def test_predict_bad_input(tmp_path):
    missing = run_script("predict.py", [str(tmp_path / "nope.onnx"), "--split", "test"], tmp_path, check=False)
    assert missing.returncode == 2 and "no such ONNX file" in missing.stderr and "Traceback" not in missing.stderr
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not onnx")
    bad = run_script("predict.py", [str(bogus), "--split", "test"], tmp_path, check=False)
    assert bad.returncode == 2 and "not a valid ONNX model" in bad.stderr
