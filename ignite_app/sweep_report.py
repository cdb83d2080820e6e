"""A sweep's results: the table of trials, the study as CSV, the best configuration as YAML, and plots.

The plots are Optuna's own visualization (matplotlib backend, PNG files that open anywhere offline): the metric per
trial (`plot_optimization_history`) and the parameters' importances (`plot_param_importances`, fANOVA).
"""
from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ignite_app.config import Config, field_names
from ignite_app.sweep_config import SweepSpec

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
# flags the sweep adds to each trial (its directory, W&B name/group, log file, hook): not part of a config to reuse
TRIAL_ONLY = ("output_dir", "wandb_group", "wandb_name", "progress_bar", "handler", "resume", "auto_resume")


@dataclass
class TrialRow:
    number: int
    state: str
    value: Optional[float]
    params: dict[str, Any]
    run_id: str = ""
    run_dir: str = ""
    seconds: Optional[float] = None
    error: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the run's own resolved config, when known


@dataclass(frozen=True)
class ReportFiles:
    csv: Path
    best: Optional[Path]
    plots: tuple[Path, ...]


def rows_from_study(study: Any) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        rows.append(TrialRow(
            number=t.number, state=STATES.get(t.state.name, t.state.name.lower()),
            value=t.value if t.state.name in ("COMPLETE", "PRUNED") else None, params=dict(t.params),
            run_id=attrs.get("run_id", ""), run_dir=attrs.get("run_dir", ""), seconds=attrs.get("seconds"),
            error=attrs.get("error", ""),
        ))
    return rows


def best_row(rows: list[TrialRow], goal: str) -> Optional[TrialRow]:
    complete = [r for r in rows if r.state == "complete" and r.value is not None and math.isfinite(r.value)]
    if not complete:
        return None
    return (max if goal == "maximize" else min)(complete, key=lambda r: r.value)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list[TrialRow], spec: SweepSpec) -> str:
    """A plain-text table: trial, state, metric, each searched parameter, seconds, run directory."""
    names = [p.name for p in spec.searched]
    header = ["trial", "state", spec.metric or "value", *names, "s", "run dir"]
    body = [[str(r.number), r.state, _fmt(r.value), *(_fmt(r.params.get(n)) for n in names), _fmt(r.seconds),
             r.run_dir + (f"  ({r.error})" if r.error else "")] for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in [header, *body]]
    return "\n".join(line.rstrip() for line in lines)


def write_csv(rows: list[TrialRow], spec: SweepSpec, path: Path) -> Path:
    names = [p.name for p in spec.searched]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "state", spec.metric or "value", *names, "seconds", "run_id", "run_dir", "error"])
        for r in rows:
            writer.writerow([r.number, r.state, "" if r.value is None else r.value, *(r.params.get(n, "") for n in names),
                             "" if r.seconds is None else r.seconds, r.run_id, r.run_dir, r.error])
    return path


def best_config(row: TrialRow, spec: SweepSpec) -> dict[str, Any]:
    """The best trial's resolved config (its run's config.yaml, or W&B's copy of it), minus what only the sweep set;
    without one, the sweep's values for that trial."""
    config = dict(row.config)
    if not config and row.run_dir and (Path(row.run_dir) / "config.yaml").is_file():
        config = yaml.safe_load((Path(row.run_dir) / "config.yaml").read_text()) or {}
    known = set(field_names())
    if not config:
        values = {**spec.fixed, **row.params}
        config = {k.replace("-", "_"): v for k, v in values.items()}
    set_by_file = {p.field for p in spec.params}
    return {k: v for k, v in config.items() if k in known and (k not in TRIAL_ONLY or k in set_by_file and k != "handler")}


def write_best(row: TrialRow, spec: SweepSpec, path: Path) -> Path:
    config = best_config(row, spec)
    Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})  # it must load as a Config
    header = (f"# best trial of sweep {spec.name}: trial {row.number}, {spec.metric} = {row.value}, run {row.run_id}\n"
              f"# train with it: python scripts/train.py --config {path}\n")
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def write_plots(study: Any, directory: Path) -> tuple[list[Path], list[str]]:
    """history.png (the metric per trial) and importances.png; returns (files written, why any was skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    written, skipped = [], []
    for name, plot in (("history", vis.plot_optimization_history), ("importances", vis.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped.append(f"{name}: {exc}")
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = directory / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written, skipped


def write_report(study: Any, rows: list[TrialRow], spec: SweepSpec, directory: Path) -> ReportFiles:
    """Print the table and write trials.csv, best.yaml and the plots under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    print(f"\nSweep {spec.name}: {len(rows)} trial(s)\n" + table(rows, spec), flush=True)
    csv_path = write_csv(rows, spec, directory / "trials.csv")
    best = best_row(rows, spec.goal)
    best_path = write_best(best, spec, directory / "best.yaml") if best else None
    complete = sum(r.state == "complete" for r in rows)
    plots, skipped = write_plots(study, directory) if complete else ([], ["no complete trial yet"])
    if best:
        print(f"Best: trial {best.number}, {spec.metric} {best.value:.4f} (run {best.run_id}): {best_path}", flush=True)
    else:
        print("No trial has completed yet: no best configuration.", flush=True)
    print(f"Study as CSV: {csv_path}" + "".join(f"\nPlot: {p}" for p in plots)
          + (f"\n(plots skipped: {'; '.join(skipped)})" if skipped else ""), flush=True)
    return ReportFiles(csv_path, best_path, tuple(plots))
