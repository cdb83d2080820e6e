"""An Ignite handler that exports the model to ONNX, verifies it with onnxruntime, and logs it to W&B.

    exporter = OnnxExportHandler(model, images, run_dir, run)   # opset, exporter: config.py's defaults
    exporter.attach(test_evaluator, evaluator, on_best=True)   # when the test set is evaluated (or the trainer
                                                               # completes), and on each new best validation score

A failed export or verification is printed and recorded in the W&B summary (`onnx/error`); training goes on and
keeps its checkpoints, unless `strict=True` makes it fatal.
"""
from __future__ import annotations

import shutil
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import CheckpointEvents
from torch import nn

from ignite_app.config import (DEFAULT_ONNX_EXPORTER, DEFAULT_ONNX_OPSET, ONNX_OPSETS, ONNX_VERIFY_BATCH_SIZES,
                               onnx_opset_problem)
from ignite_app.onnx_tools import OnnxReport, export_and_verify, preload
from ignite_app.wandb_disk import wandb_writes


class OnnxExportHandler:
    """Export + verify + log; `reports` keeps what each call produced (None for a failure)."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        directory: Path,
        run: Any = None,
        opset: int = DEFAULT_ONNX_OPSET,
        exporter: str = DEFAULT_ONNX_EXPORTER,
        tolerance: float = 1e-4,
        strict: bool = False,
        metadata: Optional[dict[str, str]] = None,
        log: Callable[[str], None] = print,
    ) -> None:
        if len(images) < max(ONNX_VERIFY_BATCH_SIZES):
            raise ValueError(f"OnnxExportHandler needs at least {max(ONNX_VERIFY_BATCH_SIZES)} validation images to "
                             f"verify, got {len(images)}")
        if exporter not in ONNX_OPSETS:
            raise ValueError(f"exporter must be one of {', '.join(ONNX_OPSETS)}, got {exporter!r}")
        if problem := onnx_opset_problem(exporter, opset, "opset"):
            raise ValueError(problem)
        self.model, self.images, self.directory, self.run = model, images, Path(directory), run
        self.opset, self.exporter, self.tolerance, self.strict = opset, exporter, tolerance, strict
        self.metadata, self.log = metadata, log
        self.reports: list[Optional[OnnxReport]] = []
        self._preloading: Optional[threading.Thread] = None

    def _preload(self, _: Engine) -> None:
        if self._preloading is None:
            self._preloading = threading.Thread(target=preload, args=(self.exporter,), name="onnx-preload", daemon=True)
            self._preloading.start()

    def __call__(self, engine: Engine, best: bool = False) -> Optional[OnnxReport]:
        if self._preloading is not None:
            self._preloading.join()
        path = self.directory / ("model-best.onnx" if best else "model.onnx")
        prefix = "onnx_best" if best else "onnx"
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self.log("ONNX export skipped: the model has NaN or infinite weights.")
            self._summary({f"{prefix}/verified": False, f"{prefix}/error": "skipped: non-finite weights"})
            self.reports.append(None)
            return None
        try:
            report = export_and_verify(self.model, self.images, path, self.opset, self.exporter,
                                       tolerance=self.tolerance, metadata=self.metadata)
        except Exception as exc:  # noqa: BLE001 - any exporter failure must not cost the run (unless strict)
            message = f"ONNX export/verification failed ({type(exc).__name__}: {exc})"
            self.log(message + ("" if self.strict else "; training goes on, checkpoints are kept."))
            self._summary({f"{prefix}/verified": False, f"{prefix}/error": message})
            self.reports.append(None)
            if self.strict:
                raise
            traceback.print_exc()
            return None
        self.log(f"ONNX: {path} ({report.exporter} exporter, opset {report.opset}, {report.file_size_bytes} bytes) "
                 f"matches PyTorch at batch sizes {report.batch_sizes}: max |diff| {report.max_abs_diff:.2e}")
        self._summary(report.as_summary(prefix))
        with wandb_writes():  # W&B's disk full: one warning for the run; the exported file stands
            self._log_artifact(path, report, best)
        self.reports.append(report)
        return report

    def _summary(self, values: dict) -> None:
        if self.run is not None and not getattr(self.run, "disabled", False):
            self.run.summary.update(values)

    def _log_artifact(self, path: Path, report: OnnxReport, best: bool) -> None:
        if self.run is None or getattr(self.run, "disabled", False):
            return
        import wandb

        artifact = wandb.Artifact(f"onnx-{self.run.id}", type="model", metadata=report.as_summary(""))
        artifact.add_file(str(path), name=path.name)
        self.run.log_artifact(artifact, aliases=["latest", "best"] if best else ["latest"])
        # a copy inside the run's files directory: `run.save` of a file outside it symlinks it and prints a warning
        shutil.copyfile(path, Path(self.run.dir) / path.name)
        self.run.save(str(Path(self.run.dir) / path.name), base_path=self.run.dir, policy="now")

    def attach(self, engine: Engine, evaluator: Optional[Engine] = None, on_best: bool = False) -> None:
        """On `engine`'s COMPLETED (the test evaluator in `scripts/train.py`, so the export follows the test result;
        or a trainer); with on_best, also whenever the best-score Checkpoint on `evaluator` saves."""
        engine.add_event_handler(Events.STARTED, self._preload)
        engine.add_event_handler(Events.COMPLETED, self)
        if on_best:
            if evaluator is None:
                raise ValueError("on_best=True needs the evaluator that the best-score Checkpoint is attached to")
            if not evaluator.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT):
                evaluator.register_events(*CheckpointEvents)
            evaluator.add_event_handler(CheckpointEvents.SAVED_CHECKPOINT, self, best=True)
