"""`scripts/predict.py model.onnx [IMAGE ...] [--split test]`: classify with onnxruntime.

Prints the class and its probability per image; on a dataset split, also the accuracy.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ignite_app.cli import ShortUsageParser, add_schema_option, check_schema_options
from ignite_app.config import check_value
from ignite_app.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = ShortUsageParser(prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              usage="%(prog)s MODEL.onnx [IMAGE ...] [--split {train,val,test}] [options]")
    parser.add_argument("model", help="an .onnx file written by train.py or export_onnx.py")
    parser.add_argument("images", nargs="*", help="PNG/JPEG files (converted to 28x28 grayscale)")
    parser.add_argument("--split", choices=("train", "val", "test"), help="classify a dataset split instead")
    # the options a training run has too: the same schema (type, choices, range) as train.py's flags
    add_schema_option(parser, "dataset", default=None, help="dataset of --split (default: the one the model was trained on)")
    add_schema_option(parser, "data_dir")
    add_schema_option(parser, "val_fraction")
    add_schema_option(parser, "seed", help="seed of the train/val split (for --split val/train)")
    add_schema_option(parser, "val_batch_size", "--batch-size", help="images per onnxruntime call")
    parser.add_argument("--show", type=int, default=10, help="on a split, print this many per-image lines")
    return parser


def open_session(path: Path):
    import onnx
    import onnxruntime as ort

    if not path.is_file():
        raise UserError(f"{path}: no such ONNX file. Pass the model.onnx that train.py wrote under OUTPUT_DIR/RUN_ID/.")
    try:
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnx/onnxruntime raise many types for a bad file
        raise UserError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc)[:200]}).") from None
    check_signature(path, session)
    return session, meta


def check_signature(path: Path, session) -> None:
    """A model this script can feed: one float input of N x 1 x 28 x 28 pixels and one N x classes output, as
    train.py and export_onnx.py write. Anything else (another project's ONNX file) is refused up front."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    fits = (
        len(inputs) == 1 and len(outputs) == 1 and inputs[0].type == "tensor(float)" and len(shape) == 4
        and shape[1:] == [1, 28, 28] and not isinstance(shape[0], int) and len(outputs[0].shape) == 2
    )
    if not fits:
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise UserError(
            f"{path} is not a model this script can run: it takes {found or 'no input'}, but predict.py feeds "
            "float32 pixels of shape [batch, 1, 28, 28] (what train.py and export_onnx.py write) and reads one "
            "[batch, classes] output."
        )


def read_images(paths: Sequence[str]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    pixels = []
    for name in paths:
        try:
            with Image.open(name) as image:
                gray = image.convert("L").resize((28, 28), Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise UserError(f"Cannot read the image {name} ({exc}). Pass PNG or JPEG files.") from None
        pixels.append(np.asarray(gray, dtype=np.float32))
    return np.stack(pixels)[:, None]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def classify(session, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities for float32 pixels (N, 1, 28, 28) in 0..255."""
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: pixels[i : i + batch_size]})[0] for i in range(0, len(pixels), batch_size)]
    return softmax(np.concatenate(out))


def predict(argv: Optional[Sequence[str]] = None) -> None:
    args = check_schema_options(build_parser().parse_args(argv))
    if args.show < 0:
        raise UserError(f"--show must be at least 0, got {args.show}.")
    if not args.images and not args.split:
        raise UserError("Nothing to classify: pass image files, or --split test (or val/train) for a dataset split.")
    session, meta = open_session(Path(args.model))
    classes = json.loads(meta.get("classes", "[]"))
    if args.split:
        from ignite_app.data import load_splits

        dataset = args.dataset or meta.get("dataset")
        if not dataset:
            raise UserError(f"{args.model} does not say which dataset it was trained on; pass --dataset.")
        dataset = check_value("dataset", dataset, f"the dataset {args.model} names in its metadata")
        split = getattr(load_splits(dataset, args.data_dir, args.val_fraction, args.seed), args.split)
        pixels, labels, names = split.images.numpy().astype(np.float32), split.labels.numpy(), None
    else:
        pixels, labels, names = read_images(args.images), None, args.images
    probs = classify(session, pixels, args.val_batch_size)
    predicted = probs.argmax(axis=1)
    shown = len(predicted) if names else min(args.show, len(predicted))
    for i in range(shown):
        label = classes[predicted[i]] if predicted[i] < len(classes) else str(predicted[i])
        where = names[i] if names else f"{args.split}[{i}]"
        truth = f"  (true: {classes[labels[i]] if labels[i] < len(classes) else labels[i]})" if labels is not None else ""
        print(f"{where}: {label}  p={probs[i, predicted[i]]:.4f}{truth}")
    if labels is not None:
        correct = int((predicted == labels).sum())
        print(f"accuracy {correct / len(labels)!r} ({correct}/{len(labels)}) on {dataset} {args.split}")
