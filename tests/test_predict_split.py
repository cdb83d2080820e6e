"""predict.py --split val/train scores the training run's own split (its seed and val_fraction, from the ONNX
metadata), not the defaults' split, which holds images the model was trained on. In-process, a hand-built model."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ignite_app.data import load_splits
from ignite_app.onnx_tools import model_metadata
from ignite_app.predict import predict
from helpers import FMNIST_SYSTEM_DIR


@pytest.fixture
def linear_onnx(tmp_path):
    """A fixed random linear classifier of 28x28 digits, with the metadata train.py writes (seed 7, val_fraction 0.3)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "linear", [x], [y], initializer=[numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for key, value in model_metadata("digits", [str(i) for i in range(10)], "run1", val_fraction=0.3, seed=7).items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path, weights


def _correct(weights, val_fraction, seed) -> tuple[int, int]:
    val = load_splits("digits", None, val_fraction, seed).val
    predicted = (val.images.numpy().reshape(len(val), -1).astype(np.float32) @ weights).argmax(1)
    return int((predicted == val.labels.numpy()).sum()), len(val)


def _scored(capsys) -> tuple[int, int]:
    correct, total = re.search(r"\((\d+)/(\d+)\) on digits val", capsys.readouterr().out).groups()
    return int(correct), int(total)


def test_predict_scores_the_training_runs_validation_split(linear_onnx, capsys):
    path, weights = linear_onnx
    assert _correct(weights, 0.3, 7) != _correct(weights, 0.1, 42)  # the two splits really differ
    predict([str(path), "--split", "val", "--show", "0"])
    assert _scored(capsys) == _correct(weights, 0.3, 7)
    predict([str(path), "--split", "val", "--show", "0", "--seed", "42", "--val-fraction", "0.1"])  # flags win
    assert _scored(capsys) == _correct(weights, 0.1, 42)


@pytest.mark.skipif(not FMNIST_SYSTEM_DIR.is_dir(), reason="needs Fashion-MNIST in /usr/share/datasets (Debian's "
                    "dataset-fashion-mnist, which .ci/run installs)")
def test_another_dataset_with_other_classes_is_refused_not_scored(linear_onnx, capsys):
    """A digits model on --split test --dataset fashion-mnist printed an accuracy (0.16) of digit classes against
    clothing labels, exit 0."""
    from ignite_app.errors import UserError

    path, _ = linear_onnx
    with pytest.raises(UserError, match="trained on digits with the classes 0, 1, 2, 3, 4, 5, ...; --dataset "
                                        "fashion-mnist has T-shirt/top"):
        predict([str(path), "--split", "test", "--dataset", "fashion-mnist", "--show", "0"])
    assert "accuracy" not in capsys.readouterr().out
