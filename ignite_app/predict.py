"""`scripts/predict.py model.onnx [IMAGE|DIR ...] [--split test]`: classify with onnxruntime.

Prints the class and its probability per image (directories are searched for image files); on a dataset split,
also the accuracy. Images are converted and resized exactly as training prepared them (the model's channels and
size come from the ONNX file's metadata).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ignite_app.cli import ShortUsageParser, add_schema_option, check_schema_options
from ignite_app.config import FIELDS, check_value, default_of, flag_of
from ignite_app.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = ShortUsageParser(prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              usage="%(prog)s MODEL.onnx [IMAGE|DIR ...] [--split {train,val,test}] [options]")
    parser.add_argument("model", help="an .onnx file written by train.py or export_onnx.py")
    parser.add_argument("images", nargs="*", metavar="IMAGE|DIR",
                        help="PNG/JPEG/... files, or directories holding them (searched recursively); converted to the "
                        "model's channels and size as in training")
    parser.add_argument("--split", choices=("train", "val", "test"), help="classify a dataset split instead")
    # the options a training run has too: the same schema (type, choices, range) as train.py's flags
    add_schema_option(parser, "dataset", default=None, help="dataset of --split (default: the one the model was trained on)")
    add_schema_option(parser, "data_dir")
    add_schema_option(parser, "val_fraction", default=None,
                      help="the train/val split's validation fraction (default: the model's training run's)")
    add_schema_option(parser, "seed", default=None, help="seed of the train/val split (for --split val/train; default: "
                      "the model's training run's)")
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
    """A model this script can feed: one float input of N x C x H x W pixels with a free batch dimension and one
    N x classes output, as train.py and export_onnx.py write. Anything else (another project's ONNX file) is refused
    up front instead of failing inside onnxruntime."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    fits = (
        len(inputs) == 1 and len(outputs) == 1 and inputs[0].type == "tensor(float)" and len(shape) == 4
        and not isinstance(shape[0], int) and len(outputs[0].shape) == 2
    )
    if not fits:
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        returns = ", ".join(f"{o.name} {o.type} {o.shape}" for o in outputs)
        raise UserError(
            f"{path} is not a model this script can run: it takes {found or 'no input'} and returns {returns}, but "
            "predict.py feeds float32 pixels [batch, channels, height, width] and reads one [batch, classes] output "
            "(what train.py and export_onnx.py write)."
        )


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Files as given; directories replaced by the image files under them, sorted."""
    from ignite_app.imagefolder import image_extensions

    extensions = image_extensions()
    found: list[str] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            inside = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(extensions))
            if not inside:
                raise UserError(f"The directory {name} holds no image files (looked for {', '.join(extensions)}).")
            found += inside
        elif path.exists():
            found.append(name)
        else:
            raise UserError(f"{name}: no such file or directory. Pass image files or directories holding them.")
    return found


def input_geometry(meta: dict[str, str]) -> tuple[int, tuple[int, int]]:
    """(channels, (height, width)) the model takes; files exported before these keys existed took 1 x 28 x 28."""
    return int(meta.get("channels", 1)), (int(meta.get("height", 28)), int(meta.get("width", 28)))


def read_images(paths: Sequence[str], channels: int = 1, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    from ignite_app.imagefolder import int_scale_of, read_image

    int_scale = int_scale_of(paths)  # the images given are one dataset: one scale for 32-bit integer images
    pixels = []
    for name in paths:
        try:
            pixels.append(read_image(name, channels, size, int_scale))
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise UserError(f"Cannot read the image {name} ({type(exc).__name__}: {exc}). Pass PNG or JPEG files.") from None
    return np.stack(pixels).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def classify(session, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities for float32 pixels (N, C, H, W) in 0..255."""
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
        channels, (height, width) = input_geometry(meta)
        # the training run's split unless asked otherwise (files from before it was recorded: the defaults)
        val_fraction, seed = (check_value(name, given if given is not None else meta.get(name, default_of(FIELDS[name])),
                                          flag_of(name) if given is not None else f"the {name} {args.model} names")
                              for name, given in (("val_fraction", args.val_fraction), ("seed", args.seed)))
        splits = load_splits(dataset, args.data_dir, val_fraction, seed,
                             image_size=height if height == width and "height" in meta else None)
        if classes and list(splits.info.classes) != list(classes):  # accuracy against another label set is noise
            raise UserError(
                f"{args.model} was trained on {meta.get('dataset', 'another dataset')} with the classes "
                f"{', '.join(map(str, classes[:6]))}{', ...' if len(classes) > 6 else ''}; --dataset {dataset} has "
                f"{', '.join(map(str, list(splits.info.classes)[:6]))}{', ...' if len(splits.info.classes) > 6 else ''}"
                ": its labels would be scored against the other classes. Leave --dataset off (the model's own), or "
                "pass one with the same classes."
            )
        split = getattr(splits, args.split)
        pixels, labels, names = split.images.numpy().astype(np.float32), split.labels.numpy(), None
    else:
        names = expand_paths(args.images)
        channels, size = input_geometry(meta)
        pixels, labels = read_images(names, channels, size), None
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
