"""`scripts/export_onnx.py --checkpoint SPEC --output model.onnx`: export any checkpoint `--resume` accepts."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ignite_app.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export_onnx.py", description=__doc__, allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True, metavar="SPEC",
                        help="a checkpoint file or directory, an offline W&B run dir, or a wandb: spec (as --resume)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo", help="torch.onnx exporter")
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir", help="where the dataset is (for verification images)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    return parser


def load_trained_model(spec: str, data_dir: Optional[str] = None):
    """(model in eval mode, its Config, its data splits) for a checkpoint SPEC."""
    from ignite_app import resume
    from ignite_app.cli import parse
    from ignite_app.data import load_splits
    from ignite_app.models import build_model

    checkpoint = resume.read(spec)
    config = parse(["--data-dir", data_dir] if data_dir else [], base=checkpoint.meta["config"])
    splits = load_splits(config.dataset, config.data_dir, config.val_fraction, config.seed)
    info = splits.info
    model = build_model(config.model, config.kernels, info.num_classes, info.mean, info.std,
                        channels_last=config.channels_last)
    resume.check_model_fits(model, checkpoint)
    model.load_state_dict(checkpoint.content["model"])
    return model.eval(), config, splits, checkpoint


def export(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    if output.exists() and not args.force:
        raise UserError(f"{output} exists; pass --force to overwrite it, or choose another --output.")
    if output.suffix != ".onnx":
        raise UserError(f"--output {output} should end in .onnx.")
    from ignite_app.onnx_tools import export_and_verify, model_metadata

    model, config, splits, checkpoint = load_trained_model(args.checkpoint, args.data_dir)
    report = export_and_verify(
        model, splits.val.images[:64], output, args.opset, args.exporter,
        metadata=model_metadata(config.dataset, splits.info.classes, checkpoint.meta["run_id"]),
    )
    print(f"Exported {checkpoint.origin} to {output}: {report.exporter} exporter, opset {report.opset}, "
          f"{report.file_size_bytes} bytes; onnxruntime matches PyTorch at batch sizes {report.batch_sizes} "
          f"(max |diff| {report.max_abs_diff:.2e}); export {report.export_seconds:.2f} s, verify {report.verify_seconds:.2f} s")
