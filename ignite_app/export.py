"""`scripts/export_onnx.py --checkpoint SPEC --output model.onnx`: load a checkpoint (any SPEC `--resume` accepts:
a file, a run directory, an offline W&B run, a wandb: artifact), rebuild its model with the normalization and class
names it was trained with, export it to ONNX and verify the file with onnxruntime against PyTorch."""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Optional, Sequence

from ignite_app.cli import ShortUsageParser, add_schema_option, check_schema_options
from ignite_app.config import onnx_opset_problem
from ignite_app.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = ShortUsageParser(prog="export_onnx.py", description=__doc__,
                              usage="%(prog)s --checkpoint SPEC --output FILE.onnx [options]")
    parser.add_argument("--checkpoint", required=True, metavar="SPEC",
                        help="a checkpoint file or directory, an offline W&B run dir, or a wandb: spec (as --resume)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    add_schema_option(parser, "onnx_opset", "--opset")
    add_schema_option(parser, "onnx_exporter", "--exporter")
    add_schema_option(parser, "data_dir", help="where the dataset is (for verification images)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    return parser


def check_output(output: Path, force: bool) -> None:
    """--output must be a new (or, with --force, an existing) .onnx file in a directory that exists or can be made."""
    if output.is_dir():
        raise UserError(f"--output {output} is a directory; give the file to write, e.g. --output {output / 'model.onnx'}.")
    if output.suffix != ".onnx":
        raise UserError(f"--output {output} should end in .onnx.")
    if output.exists() and not force:
        raise UserError(f"{output} exists; pass --force to overwrite it, or choose another --output.")
    parent = next((p for p in output.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise UserError(f"--output {output}: {parent} is a file, not a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--output {output}: {parent} is not writable by this user; choose a writable location.")


def load_trained_model(spec: str, data_dir: Optional[str] = None, flag: str = "--checkpoint"):
    """(model in eval mode, its Config, its data splits, the resolved checkpoint) for a checkpoint SPEC given as
    `flag` (named in the messages). The model's input shape, class names and normalization are the checkpoint's
    saved `data` entry (what it was trained on), not what the data folder holds now: `splits.info` carries them, so
    the ONNX metadata is the model's own. A folder whose images now have another shape is refused (exit 2): its
    images cannot verify the model."""
    from ignite_app import resume
    from ignite_app.cli import parse
    from ignite_app.data import splits_from_config
    from ignite_app.models import build_model

    checkpoint = resume.read(spec, flag)
    config = parse(["--data-dir", data_dir] if data_dir else [], base=checkpoint.meta["config"])
    splits = splits_from_config(config)
    info = splits.info
    saved = checkpoint.content.get("data")  # what the model was trained with: shape, normalization and class names
    if saved is not None:
        trained_shape = (int(saved["channels"]), *map(int, saved["size"]))
        if (info.channels, *info.size) != trained_shape:
            shape = " x ".join(map(str, trained_shape))
            raise UserError(
                f"The checkpoint {checkpoint.origin} was trained on {shape} images, and its data "
                f"(--dataset {config.dataset}{f' --data-dir {config.data_dir}' if config.data_dir else ''}) now gives "
                f"{info.channels} x {info.size[0]} x {info.size[1]} images: the folder changed since, so its images "
                "cannot check the export. Point --data-dir at the data the model was trained on."
            )
        info = dataclasses.replace(info, classes=tuple(saved["classes"]), num_classes=len(saved["classes"]),
                                   mean=tuple(saved["mean"]), std=tuple(saved["std"]))
        splits.info = info
    model = build_model(config.model, config.kernels, info.num_classes, info.mean, info.std, in_channels=info.channels,
                        image_size=info.size, channels_last=config.channels_last)
    resume.check_model_fits(model, checkpoint)
    model.load_state_dict(checkpoint.content["model"])
    return model.eval(), config, splits, checkpoint


def export(argv: Optional[Sequence[str]] = None) -> None:
    args = check_schema_options(build_parser().parse_args(argv))
    if problem := onnx_opset_problem(args.onnx_exporter, args.onnx_opset, "--opset"):
        raise UserError(problem[0].upper() + problem[1:] + "; pick another --opset or --exporter.")
    output = Path(args.output)
    check_output(output, args.force)
    from ignite_app.data import verification_images
    from ignite_app.onnx_tools import export_and_verify, model_metadata

    model, config, splits, checkpoint = load_trained_model(args.checkpoint, args.data_dir)
    try:
        report = export_and_verify(
            model, verification_images(splits), output, args.onnx_opset, args.onnx_exporter,
            metadata=model_metadata(config.dataset, splits.info.classes, checkpoint.meta["run_id"], splits.info.channels,
                                    splits.info.size, config.val_fraction, config.seed),
        )
    except OSError as exc:  # a directory the checks above cannot see through (read-only mount, /proc, quota)
        if exc.filename is None or Path(exc.filename).resolve() not in (output.resolve(), output.parent.resolve()):
            raise
        raise UserError(f"Cannot write --output {output}: {exc.strerror}. Choose a writable location.") from None
    print(f"Exported {checkpoint.origin} to {output}: {report.exporter} exporter, opset {report.opset}, "
          f"{report.file_size_bytes} bytes; onnxruntime matches PyTorch at batch sizes {report.batch_sizes} "
          f"(max |diff| {report.max_abs_diff:.2e}); export {report.export_seconds:.2f} s, verify {report.verify_seconds:.2f} s")
