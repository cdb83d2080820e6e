"""The test report: what the model gets right and wrong on the test set, once, at the end of a run.

    report = TestReport(classes, run_dir, run=wandb_run, images=test_split, log=print)
    report.attach(test_evaluator)       # collects each batch's predictions; reports on COMPLETED

It rides on the test evaluation the run does anyway (no second pass over the data) and produces:
- a compact printed table: per-class precision, recall and support, and the confusion matrix when there are at most
  20 classes (else the 10 classes with the lowest recall). A class's accuracy is its recall (the share of its images
  classified right, as in the PyTorch tutorials' "accuracy for class"), and the title says so; the CSV and W&B tables
  also carry it under its own name, `accuracy`, for readers without the title;
- W&B: `test/confusion_matrix` (wandb.plot.confusion_matrix), `test/per_class` and `test/worst_images` tables (the
  misclassified test images with the highest loss, like the hard-examples handler);
- `test_report.csv` (per class, with its row of the confusion matrix) and `test_report.png` (the matrix, drawn with
  matplotlib's Agg canvas, so no display is needed) in the run directory.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from ignite_app.handlers.hard_examples import wandb_image
from ignite_app.disk import describe, disk_error
from ignite_app.wandb_disk import wandb_writes

MAX_MATRIX_CLASSES = 20


def gather_in_rank_order(rows: torch.Tensor) -> Optional[torch.Tensor]:
    """All ranks' rows on rank 0, in rank order (each rank evaluates a contiguous shard, so this is the split's
    order), None on the other ranks. torch.distributed's object gather, because the shards' lengths may differ
    by one and Ignite's all_gather needs equal shapes."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    gathered: list[Optional[torch.Tensor]] = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(rows, gathered, dst=0)
    return torch.cat(gathered) if dist.get_rank() == 0 else None


def scores(labels: np.ndarray, predicted: np.ndarray, k: int) -> dict[str, Any]:
    """The confusion matrix and per-class precision, recall, F1 and support of integer labels 0..k-1 (what sklearn's
    confusion_matrix and precision_recall_fscore_support(zero_division=0) give). By hand, with numpy: importing
    sklearn.metrics cost 0.6 CPU-s at the end of every run, for three lines of counting."""
    matrix = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    right, support, claimed = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(claimed > 0, right / np.maximum(claimed, 1), 0.0)
        recall = np.where(support > 0, right / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    accuracy = float(right.sum() / len(labels)) if len(labels) else float("nan")
    return {"matrix": matrix, "precision": precision, "recall": recall, "f1": f1, "support": support,
            "accuracy": accuracy}


class TestReport:
    def __init__(self, classes: Sequence[str], directory: Path, run: Any = None, images: Any = None,
                 log: Callable[[str], None] = print, worst: int = 16, step: Callable[[], int] = lambda: 0) -> None:
        if worst < 0:
            raise ValueError(f"worst must be >= 0, got {worst}")
        self.classes, self.directory, self.run, self.images = list(classes), Path(directory), run, images
        self.log, self.worst, self.step = log, worst, step
        self.reset()

    def reset(self, _: Optional[Engine] = None) -> None:
        self.parts: list[torch.Tensor] = []

    def collect(self, engine: Engine) -> None:
        logits, labels = engine.state.output[0].detach().float(), engine.state.output[1]
        losses = F.cross_entropy(logits, labels, reduction="none")
        probs, predicted = logits.softmax(1).max(1)
        self.parts.append(torch.stack([labels.float(), predicted.float(), probs, losses], 1).cpu())

    def __call__(self, engine: Engine) -> dict[str, Any]:
        rows = gather_in_rank_order(torch.cat(self.parts) if self.parts else torch.zeros(0, 4))
        if rows is None:  # not rank 0: its shard went to rank 0, which reports for all
            return {}
        labels, predicted = rows[:, 0].long().numpy(), rows[:, 1].long().numpy()
        report = scores(labels, predicted, len(self.classes))
        self.log(self.format_table(report))
        try:
            self.write_csv(report, self.directory / "test_report.csv")
            self.write_png(report, self.directory / "test_report.png")
        except OSError as exc:  # the table above is printed: a full disk costs only the files, not the finished run
            if disk_error(exc) is None:
                raise
            self.log(f"Test report files not written to {self.directory} ({describe(exc)}).")
        with wandb_writes():  # W&B's disk full: one warning for the run; the printed table and files stand
            self.log_wandb(report, rows)
        return report

    def format_table(self, r: dict[str, Any]) -> str:
        k = len(self.classes)
        width = min(max([len(c) for c in self.classes] + [5]), 24)
        show_matrix = k <= MAX_MATRIX_CLASSES
        order = range(k) if show_matrix else np.argsort(r["recall"], kind="stable")[:10]
        cell = max(len(str(int(r["matrix"].max(initial=0)))), 2) + 1
        head = f"{'class':<{width}}  precision  recall  support"
        if show_matrix:
            head += "  | predicted: " + "".join(f"{j:>{cell}}" for j in range(k))
        title = (f"Test report: accuracy {r['accuracy']:.4f} on {int(r['support'].sum())} images"
                 + ("" if show_matrix else f"; the 10 of {k} classes with the lowest recall")
                 + " (a class's recall is its accuracy: the share of its images classified right)")
        lines = [title, head]
        for i in order:
            line = f"{self.classes[i][:width]:<{width}}  {r['precision'][i]:9.3f}  {r['recall'][i]:6.3f}  {int(r['support'][i]):7d}"
            if show_matrix:
                line += f"  | {i:>9}: " + "".join(f"{int(v):>{cell}}" for v in r["matrix"][i])
            lines.append(line)
        return "\n".join(lines)

    def write_csv(self, r: dict[str, Any], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "precision", "recall", "accuracy", "f1", "support",
                             *[f"predicted {c}" for c in self.classes]])
            for i, name in enumerate(self.classes):  # a class's accuracy is its recall (module docstring)
                writer.writerow([name, f"{r['precision'][i]:.6f}", f"{r['recall'][i]:.6f}", f"{r['recall'][i]:.6f}",
                                 f"{r['f1'][i]:.6f}", int(r["support"][i]), *map(int, r["matrix"][i])])

    def write_png(self, r: dict[str, Any], path: Path) -> None:
        from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no global backend

        k, matrix = len(self.classes), r["matrix"]
        side = min(4 + 0.45 * k, 40)
        fig = Figure(figsize=(side, side), dpi=100, layout="constrained")
        ax = fig.subplots()
        ax.imshow(matrix, cmap="Blues", interpolation="nearest")
        if k <= MAX_MATRIX_CLASSES:
            dark = matrix > matrix.max(initial=0) / 2
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(j, i, str(int(value)), ha="center", va="center", color="white" if dark[i, j] else "black")
        ax.set_xticks(range(k), self.classes, rotation=90 if k > 6 else 0)
        ax.set_yticks(range(k), self.classes)
        ax.set(xlabel="Predicted label", ylabel="True label", title=f"Test set: accuracy {r['accuracy']:.4f}")
        fig.savefig(path)

    def log_wandb(self, r: dict[str, Any], rows: torch.Tensor) -> None:
        if self.run is None or getattr(self.run, "disabled", False):
            return
        import wandb

        labels, predicted = rows[:, 0].long(), rows[:, 1].long()
        per_class = wandb.Table(columns=["class", "precision", "recall", "accuracy", "f1", "support"])
        for i, name in enumerate(self.classes):
            per_class.add_data(name, float(r["precision"][i]), float(r["recall"][i]), float(r["recall"][i]),
                               float(r["f1"][i]), int(r["support"][i]))
        values: dict[str, Any] = {
            "test/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=labels.tolist(), preds=predicted.tolist(), class_names=self.classes, title="Test confusion matrix"),
            "test/per_class": per_class,
        }
        wrong = (predicted != labels).nonzero().flatten()
        if self.worst and len(wrong) and self.images is not None:
            hardest = wrong[rows[wrong, 3].argsort(descending=True)[: self.worst]]
            pixels, _ = self.images.__getitems__(hardest.tolist())
            table = wandb.Table(columns=["image", "true", "predicted", "probability", "loss"])
            for image, i in zip(pixels, hardest.tolist()):
                table.add_data(wandb_image(image), self.classes[labels[i]], self.classes[predicted[i]],
                               float(rows[i, 2]), float(rows[i, 3]))
            values["test/worst_images"] = table
        self.run.log(values, step=self.step())

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.STARTED, self.reset)
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        evaluator.add_event_handler(Events.COMPLETED, self)
