"""ONNX export with a dynamic batch dimension, and its verification against PyTorch with onnxruntime.

The exporter is picked explicitly: torch 2.9+ made the dynamo exporter the default and silently fixed batch
dimensions are the most common complaint, so both paths name the batch dimension and verification runs at
batch sizes 1 and an odd one.
"""
from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ignite_app.config import DEFAULT_ONNX_EXPORTER, DEFAULT_ONNX_OPSET, ONNX_EXPORTERS, ONNX_VERIFY_BATCH_SIZES

INPUT_NAME, OUTPUT_NAME = "pixels", "logits"


@dataclass
class OnnxReport:
    path: str
    exporter: str
    opset: int
    file_size_bytes: int = 0
    export_seconds: float = 0.0
    verify_seconds: float = 0.0
    max_abs_diff: float = float("nan")
    batch_sizes: list[int] = field(default_factory=list)
    verified: bool = False

    def as_summary(self, prefix: str = "onnx") -> dict:
        return {f"{prefix}/{k}": v for k, v in asdict(self).items() if k != "batch_sizes"}


class OnnxVerificationError(RuntimeError):
    """The exported file does not match the PyTorch model."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module to export: not a torch.compile wrapper nor DDP."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def preload(exporter: str = DEFAULT_ONNX_EXPORTER) -> None:
    """Import what an export and its verification need (0.8-0.9 CPU-s cold: onnx, onnxruntime, onnxscript and the
    dynamo exporter's modules). Run on a thread while the test evaluation's kernels hold the cores, it takes the
    imports off the tail of the run; an import error is left for the export itself to report."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        if exporter == "dynamo":
            import onnxscript  # noqa: F401
            import torch.onnx._internal.exporter._core  # noqa: F401
    except Exception:  # noqa: BLE001 - the export reports it, with the run's own rules (strict or not)
        pass


def export_onnx(
    model: nn.Module, sample: torch.Tensor, path: Path, opset: int = DEFAULT_ONNX_OPSET, exporter: str = DEFAULT_ONNX_EXPORTER,
    metadata: Optional[dict[str, str]] = None,
) -> None:
    """Export `model` (in eval mode, on the CPU, float pixels N x C x H x W in) with a dynamic batch dimension."""
    import onnx

    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; choose one of {ONNX_EXPORTERS}")
    module = copy.deepcopy(unwrap(model)).cpu().eval()  # a copy: the training model keeps its device and mode
    sample = sample[:2].float().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation chatter; failures still raise
        if exporter == "dynamo":
            torch.onnx.export(
                module, (sample,), str(path), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                external_data=False,  # one self-contained file, as W&B and predict.py expect
            )
        else:
            torch.onnx.export(
                module, (sample,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    proto = onnx.load(str(path))
    written = written_opset(proto)
    if written != opset:  # the dynamo exporter falls back to its own opset when converting down fails
        path.unlink()
        raise OnnxVerificationError(f"the {exporter} exporter wrote opset {written}, not the {opset} asked for")
    if metadata:
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(path))


def written_opset(proto) -> Optional[int]:
    """The default-domain opset an ONNX model declares."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def verify_onnx(
    path: Path, model: nn.Module, images: torch.Tensor, batch_sizes: Sequence[int] = ONNX_VERIFY_BATCH_SIZES, tolerance: float = 1e-4,
) -> float:
    """onnx.checker, then onnxruntime vs PyTorch on real images at each batch size: returns the max |difference|;
    raises OnnxVerificationError when it exceeds `tolerance` x max(1, max |logit|) or a predicted class differs."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = unwrap(model)
    was_training = module.training
    device = next(module.parameters()).device
    module.eval()
    worst = 0.0
    try:
        for size in batch_sizes:
            batch = images[:size].float()
            if len(batch) < size:
                raise OnnxVerificationError(f"need {size} images to verify batch size {size}, got {len(images)}")
            (onnx_logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
            with torch.no_grad():
                torch_logits = module(batch.to(device)).float().cpu().numpy()
            if onnx_logits.shape != torch_logits.shape:
                raise OnnxVerificationError(f"batch size {size}: ONNX output shape {onnx_logits.shape} vs {torch_logits.shape}")
            diff = float(np.abs(onnx_logits - torch_logits).max())
            worst = max(worst, diff)
            # relative to the logits' scale: float32 rounding grows with magnitude (a briefly trained batch-norm
            # network can emit logits in the thousands, where 1e-4 absolute is below float32's resolution)
            allowed = tolerance * max(1.0, float(np.abs(torch_logits).max()))
            if diff > allowed:
                raise OnnxVerificationError(f"batch size {size}: max |ONNX - PyTorch| = {diff:.3g} > {allowed:.3g} "
                                            f"({tolerance:g} x max(1, max |logit|))")
            if not np.array_equal(onnx_logits.argmax(1), torch_logits.argmax(1)):
                raise OnnxVerificationError(f"batch size {size}: ONNX and PyTorch predict different classes")
    finally:
        module.train(was_training)
    return worst


def export_and_verify(
    model: nn.Module, images: torch.Tensor, path: Path, opset: int = DEFAULT_ONNX_OPSET, exporter: str = DEFAULT_ONNX_EXPORTER,
    batch_sizes: Sequence[int] = ONNX_VERIFY_BATCH_SIZES, tolerance: float = 1e-4, metadata: Optional[dict[str, str]] = None,
) -> OnnxReport:
    report = OnnxReport(path=str(path), exporter=exporter, opset=opset, batch_sizes=list(batch_sizes))
    start = time.perf_counter()
    export_onnx(model, images, path, opset, exporter, metadata)
    report.export_seconds = time.perf_counter() - start
    report.file_size_bytes = path.stat().st_size
    start = time.perf_counter()
    report.max_abs_diff = verify_onnx(path, model, images, batch_sizes, tolerance)
    report.verify_seconds = time.perf_counter() - start
    report.verified = True
    return report


def model_metadata(dataset: str, classes: Sequence[str], run_id: str, channels: int = 1,
                   size: Sequence[int] = (28, 28), val_fraction: Optional[float] = None,
                   seed: Optional[int] = None) -> dict[str, str]:
    """What predict.py needs to prepare images and name classes, stored in the ONNX file's metadata_props; and the
    training run's train/val split (val_fraction, seed), so that `predict.py --split val` scores the images the
    model was validated on, not a split that holds some it was trained on."""
    height, width = size
    split = {k: str(v) for k, v in (("val_fraction", val_fraction), ("seed", seed)) if v is not None}
    return {"dataset": dataset, "classes": json.dumps(list(classes)), "run_id": run_id, **split,
            "channels": str(channels), "height": str(height), "width": str(width),
            "input": f"float32 pixels 0..255, shape N x {channels} x {height} x {width}; normalization is inside the model"}
