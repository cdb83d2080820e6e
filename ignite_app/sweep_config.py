"""A W&B sweep configuration (YAML) read and checked against our Config schema, before any trial runs.

    method: random                      # grid | random | bayes
    metric: {name: validation/best_accuracy, goal: maximize}
    parameters:
      lr: {distribution: log_uniform_values, min: 0.0001, max: 0.1}
      batch-size: {values: [32, 64]}    # our flags, in either spelling
      dataset: {value: digits}
    early_terminate: {type: hyperband, min_iter: 1, eta: 3}

Every parameter name must be a flag of `scripts/train.py`, and every value it can take (each of `values`, the
`value`, a distribution's `min` and `max`) must pass the same checks a command line does; otherwise a UserError
lists every problem (exit 2). Offline, the search space maps onto Optuna's distributions (`Param.suggest`).
"""
from __future__ import annotations

import contextlib
import io
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from ignite_app.config import Config, field_names
from ignite_app.errors import UserError

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
# keys of a W&B sweep configuration (https://docs.wandb.ai/guides/sweeps/sweep-config-keys)
TOP_LEVEL_KEYS = ("method", "metric", "parameters", "early_terminate", "name", "description", "program", "command",
                  "project", "entity", "run_cap", "controller", "job", "image_uri", "scheduler")
# what a trial reports (its W&B summary has them): the metric a sweep can rank trials by, offline
METRICS = ("validation/best_accuracy", "validation/best_loss", "validation/accuracy", "validation/loss",
           "test/accuracy", "test/loss", "training/loss")
# flags a sweep must not vary: they decide how a run starts, not what it trains
NOT_SWEEPABLE = ("resume", "auto_resume", "config")
# W&B distributions and how Optuna draws them offline; the others have no Optuna equivalent
FLOAT_DISTRIBUTIONS = ("uniform", "q_uniform", "log_uniform", "log_uniform_values")
SUPPORTED_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_log_uniform_values", *FLOAT_DISTRIBUTIONS)
WANDB_ONLY_DISTRIBUTIONS = ("q_log_uniform", "inv_log_uniform", "inv_log_uniform_values", "normal", "q_normal",
                            "log_normal", "q_log_normal", "beta", "q_beta")
PARAM_KEYS = ("value", "values", "distribution", "min", "max", "q", "probabilities", "mu", "sigma", "a", "b")


@dataclass(frozen=True)
class Param:
    """One parameter: fixed (`value`), categorical (`values`), or an int/float range."""

    name: str  # as written in the file: the agent passes `--{name}=value`, so the trial command uses it too
    field: str  # the Config field it sets
    kind: str  # fixed | categorical | int | float
    value: Any = None
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: Optional[float] = None

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter for an Optuna trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def grid_values(self) -> list[Any]:
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1))
        if self.kind == "float" and self.step and not self.log:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9))
            return [round(self.low + i * self.step, 12) for i in range(n + 1)]
        raise ValueError("a grid sweep needs `values` (or an int_uniform / q_uniform range) for every parameter; "
                         "use method random or bayes for continuous distributions")

    def candidates(self) -> list[Any]:
        """The values to check against the schema: every choice, or both ends of a range."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "categorical":
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep configuration."""

    path: Path
    raw: dict[str, Any]
    name: str
    method: str
    metric: Optional[str]
    goal: str
    params: tuple[Param, ...]
    early_terminate: Optional[dict[str, Any]] = None
    run_cap: Optional[int] = None
    base: Optional[Config] = None  # the Config of the fixed values alone, as a trial would parse them

    @property
    def searched(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind != "fixed")

    @property
    def fixed(self) -> dict[str, Any]:
        return {p.name: p.value for p in self.params if p.kind == "fixed"}

    @property
    def direction(self) -> str:
        return self.goal

    def grid(self) -> dict[str, list[Any]]:
        return {p.name: p.grid_values() for p in self.searched}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values()) if self.method == "grid" else 0

    def max_epochs(self) -> int:
        """The most epochs any trial trains (hyperband's largest budget when the file gives no max_iter)."""
        epochs = next((p for p in self.params if p.field == "epochs"), None)
        if epochs is None or epochs.kind == "fixed":
            return self.base.epochs
        return int(max(epochs.candidates()))


def agent_value(value: Any) -> Any:
    """A value as Optuna stores a categorical choice: lists become the text the W&B agent passes (`[16, 32]`)."""
    if isinstance(value, (list, tuple)):
        return str(list(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise UserError(f"Sweep values must be numbers, strings, booleans, null or lists; got {value!r}.")


def trial_flags(values: dict[str, Any]) -> list[str]:
    """`--name=value` for each parameter, exactly as the W&B agent builds a trial's command (${args})."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})["args"]


def read(path: str | Path, offline: bool = True) -> SweepSpec:
    """Read and check a sweep file; raises one UserError naming every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"Cannot read the sweep file {str(path)!r}: {exc.strerror}. Check the path.") from None
    except yaml.YAMLError as exc:
        raise UserError(f"The sweep file {str(path)!r} is not valid YAML ({exc}).") from None
    if not isinstance(raw, dict):
        raise UserError(f"The sweep file {str(path)!r} must be a mapping (method, metric, parameters, ...), "
                        f"not {type(raw).__name__}.")
    return check(raw, path, offline)


def check(raw: dict[str, Any], path: Path, offline: bool = True) -> SweepSpec:
    problems: list[str] = []
    unknown = sorted(set(map(str, raw)) - set(TOP_LEVEL_KEYS))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (a W&B sweep configuration has {', '.join(TOP_LEVEL_KEYS[:6])}, ...)")
    method = raw.get("method")
    if method not in METHODS:
        problems.append(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
    metric, goal = _metric(raw.get("metric"), method, offline, problems)
    params = _params(raw.get("parameters"), method, offline, problems)
    early = raw.get("early_terminate")
    if early is not None:
        _check_early_terminate(early, metric, problems)
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 1):
        problems.append(f"`run_cap` must be a positive integer, got {run_cap!r}")
    name = str(raw.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        problems.append(f"the sweep name {name!r} (from `name` or the file name) must be letters, digits, . _ -, as "
                        "it names the sweep's directory and study")
    command = raw.get("command")
    if offline and command is not None and "${args}" not in [str(c) for c in command]:
        problems.append("offline sweeps pass the parameters with ${args} in `command` (the other W&B formats, "
                        "such as ${args_json}, are not read by scripts/train.py)")
    for p in params:
        if method == "grid" and p.kind != "fixed":
            try:
                p.grid_values()
            except ValueError as exc:
                problems.append(f"parameter {p.name!r}: {exc}")
    base = None
    if not problems:
        base = _check_values(params, problems)
    if problems:
        raise UserError(f"The sweep file {str(path)!r} is not usable: " + "; ".join(problems) + ". Nothing was run.")
    return SweepSpec(path=path, raw=raw, name=name, method=method, metric=metric, goal=goal, params=tuple(params),
                     early_terminate=early, run_cap=run_cap, base=base)


def _metric(metric: Any, method: Any, offline: bool, problems: list[str]) -> tuple[Optional[str], str]:
    if metric is None:
        if offline or method == "bayes":
            problems.append("`metric` is missing: say what to optimize, e.g. metric: {name: validation/best_accuracy, "
                            "goal: maximize}")
        return None, "minimize"
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        problems.append(f"`metric` must be a mapping with a `name` (and `goal`), got {metric!r}")
        return None, "minimize"
    name, goal = metric["name"], metric.get("goal", "minimize")  # W&B's default goal
    if goal not in GOALS:
        problems.append(f"`metric.goal` must be minimize or maximize, got {goal!r}")
    if offline and name not in METRICS:
        problems.append(f"metric {name!r} is not one a run reports; offline sweeps can rank by {', '.join(METRICS)}")
    return name, goal


def _params(raw: Any, method: Any, offline: bool, problems: list[str]) -> list[Param]:
    if not isinstance(raw, dict) or not raw:
        problems.append("`parameters` must map flag names to their values, e.g. lr: {values: [0.01, 0.001]}")
        return []
    known = set(field_names())
    params, seen = [], {}
    for name, spec in raw.items():
        name = str(name)
        field_name = name.replace("-", "_")
        if field_name not in known or field_name in NOT_SWEEPABLE:
            close = [n for n in sorted(known) if n.startswith(field_name[:3])][:4]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            why = "cannot be swept" if field_name in NOT_SWEEPABLE else "is not a flag of scripts/train.py"
            problems.append(f"parameter {name!r} {why}{hint}")
            continue
        if field_name in seen:
            problems.append(f"parameters {seen[field_name]!r} and {name!r} are the same flag")
            continue
        seen[field_name] = name
        param = _param(name, field_name, spec, offline, problems)
        if param is not None:
            params.append(param)
    if not problems and method in METHODS and not any(p.kind != "fixed" for p in params):
        problems.append("no parameter varies: give at least one `values` list or distribution")
    return params


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _param(name: str, field_name: str, spec: Any, offline: bool, problems: list[str]) -> Optional[Param]:
    where = f"parameter {name!r}"
    if not isinstance(spec, dict):
        problems.append(f"{where} must be a mapping such as {{values: [...]}} or {{value: ...}}, got {spec!r}")
        return None
    if "parameters" in spec:
        problems.append(f"{where}: nested parameters are not supported (our flags are flat)")
        return None
    extra = sorted(set(map(str, spec)) - set(PARAM_KEYS))
    if extra:
        problems.append(f"{where} has unknown key(s) {', '.join(extra)}")
        return None
    dist = spec.get("distribution")
    if dist is None:  # W&B infers it
        dist = ("constant" if "value" in spec else "categorical" if "values" in spec
                else "int_uniform" if _number(spec.get("min")) and isinstance(spec.get("min"), int)
                and isinstance(spec.get("max"), int) else "uniform" if "min" in spec or "max" in spec else None)
    if dist is None:
        problems.append(f"{where} needs `value`, `values`, or `min`/`max` (with a `distribution`)")
        return None
    if dist in WANDB_ONLY_DISTRIBUTIONS:
        if offline:
            problems.append(f"{where}: distribution {dist} has no Optuna equivalent, so it works only with W&B "
                            f"online; offline use one of {', '.join(SUPPORTED_DISTRIBUTIONS)}")
        return None
    if dist not in SUPPORTED_DISTRIBUTIONS:
        problems.append(f"{where}: unknown distribution {dist!r}")
        return None
    try:
        if dist == "constant":
            if "value" not in spec:
                raise ValueError("distribution constant needs `value`")
            return Param(name, field_name, "fixed", value=spec["value"])
        if dist == "categorical":
            values = spec.get("values")
            if not isinstance(values, list) or not values:
                raise ValueError("`values` must be a non-empty list")
            if "probabilities" in spec and offline:
                raise ValueError("`probabilities` has no Optuna equivalent (remove it offline)")
            choices = tuple(agent_value(v) for v in values)
            if len(set(map(repr, choices))) != len(choices):
                raise ValueError("`values` lists a value twice")
            return Param(name, field_name, "categorical", choices=choices)
        low, high = spec.get("min"), spec.get("max")
        if not (_number(low) and _number(high)):
            raise ValueError(f"distribution {dist} needs numeric `min` and `max`")
        if not low < high:
            raise ValueError(f"`min` ({low}) must be less than `max` ({high})")
        if dist == "int_uniform":
            if not (isinstance(low, int) and isinstance(high, int)):
                raise ValueError("int_uniform needs integer `min` and `max`")
            return Param(name, field_name, "int", low=low, high=high)
        if dist == "q_log_uniform_values":
            if spec.get("q", 1) != 1 or not (isinstance(low, int) and isinstance(high, int)) or low < 1:
                raise ValueError("offline, q_log_uniform_values works with q: 1 and integer min >= 1 (an integer "
                                 "log-uniform draw); Optuna has no quantized log scale otherwise")
            return Param(name, field_name, "int", low=low, high=high, log=True)
        if dist == "log_uniform":  # W&B's log_uniform takes natural-log bounds
            return Param(name, field_name, "float", low=math.exp(low), high=math.exp(high), log=True)
        if dist == "log_uniform_values":
            if low <= 0:
                raise ValueError("log_uniform_values needs `min` > 0")
            return Param(name, field_name, "float", low=float(low), high=float(high), log=True)
        step = spec.get("q", 1.0) if dist == "q_uniform" else None
        if step is not None and (not _number(step) or step <= 0 or step > high - low):
            raise ValueError(f"`q` must be positive and at most max - min, got {step!r}")
        return Param(name, field_name, "float", low=float(low), high=float(high), step=step)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return None


def _check_early_terminate(early: Any, metric: Optional[str], problems: list[str]) -> None:
    if not isinstance(early, dict) or early.get("type") != "hyperband":
        problems.append(f"`early_terminate` must be {{type: hyperband, min_iter: N, eta: 3}} (the one type W&B has), "
                        f"got {early!r}")
        return
    for key in ("min_iter", "max_iter", "s", "eta"):
        value = early.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append(f"`early_terminate.{key}` must be a positive integer, got {value!r}")
    if isinstance(early.get("eta", 3), int) and early.get("eta", 3) < 2:
        problems.append("`early_terminate.eta` must be at least 2")
    if early.get("min_iter") is None and (early.get("max_iter") is None or early.get("s") is None):
        problems.append("`early_terminate` needs `min_iter`, or `max_iter` and `s`")
    if metric is not None and metric.split("/")[-1].removeprefix("best_") not in ("accuracy", "loss"):
        problems.append(f"early termination watches the metric per epoch, which {metric!r} has not")


def _check_values(params: list[Param], problems: list[str]) -> Optional[Config]:
    """Parse the fixed values alone, then each candidate value on top of them, exactly as a trial will."""
    from ignite_app.cli import parse

    fixed = {p.name: p.value for p in params if p.kind == "fixed"}
    base, error = _parse_quietly(parse, trial_flags(fixed))
    if error:
        problems.append(f"the fixed values do not make a valid command line: {error}")
        return None
    for p in params:
        if p.kind == "fixed":
            continue
        for value in p.candidates():
            _, error = _parse_quietly(parse, trial_flags({**fixed, p.name: value}))
            if error:
                problems.append(f"parameter {p.name!r} value {value!r}: {error}")
                break
    return base


def _parse_quietly(parse: Any, argv: list[str]) -> tuple[Optional[Config], Optional[str]]:
    """(Config, None) or (None, the one-line reason): argparse's exit and message become a problem to report."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parse(argv), None
    except UserError as exc:
        return None, str(exc).removeprefix("Invalid configuration: ").split(". Fix the flag")[0]
    except SystemExit:
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        return None, (lines[-1].split("error: ", 1)[-1] if lines else "rejected by the command line")


def combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of a grid (for messages and tests)."""
    grid = spec.grid()
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
