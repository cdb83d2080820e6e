"""The online engine: a W&B sweep run by W&B's agent, each trial a `scripts/train.py` process; then the report.

The sweep file goes to W&B as written, with two defaults filled in when it has none: `program` (this project's
scripts/train.py) and a `command` that names this Python (the agent's ${interpreter} is a bare `python`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

from ignite_app.errors import UserError
from ignite_app.sweep_config import SweepSpec

API_TIMEOUT_SECONDS = 10


def unreachable() -> Optional[str]:
    """None when W&B's API answers with the configured key, else why not."""
    import wandb

    try:
        wandb.Api(timeout=API_TIMEOUT_SECONDS).viewer  # noqa: B018 - one authenticated request
    except Exception as exc:  # noqa: BLE001 - network, auth and server errors all mean "not usable now"
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def sweep_config_for_wandb(spec: SweepSpec) -> dict[str, Any]:
    from ignite_app.sweep_optuna import TRAIN_SCRIPT

    config = dict(spec.raw)
    config.setdefault("name", spec.name)
    config.setdefault("program", str(TRAIN_SCRIPT))
    config.setdefault("command", ["${env}", sys.executable, "${program}", "${args}"])
    return config


def project_and_entity(spec: SweepSpec, args: Any) -> tuple[str, Optional[str]]:
    from ignite_app.tracking import DEFAULT_PROJECT

    fixed = {p.field: p.value for p in spec.params if p.kind == "fixed"}
    project = (args.project or spec.raw.get("project") or fixed.get("wandb_project")
               or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT)
    entity = args.entity or spec.raw.get("entity") or fixed.get("wandb_entity") or os.environ.get("WANDB_ENTITY")
    return project, entity


def run(spec: SweepSpec, root: Path, args: Any) -> None:
    import wandb

    project, entity = project_and_entity(spec, args)
    sweep_id = args.sweep_id
    if not args.report:
        if sweep_id is None:
            sweep_id = wandb.sweep(sweep_config_for_wandb(spec), project=project, entity=entity)
            print(f"Created W&B sweep {sweep_id}; more machines can join it with "
                  f"`scripts/sweep.py {spec.path} --sweep-id {sweep_id}` (or `wandb agent {entity + '/' if entity else ''}"
                  f"{project}/{sweep_id}`).", flush=True)
        wandb.agent(sweep_id, project=project, entity=entity, count=args.count)
    elif sweep_id is None:
        raise UserError("--report online needs --sweep-id (the W&B sweep to report on).")
    report(spec, root, project, entity, sweep_id)


def report(spec: SweepSpec, root: Path, project: str, entity: Optional[str], sweep_id: str) -> None:
    """The same table, CSV, best YAML and plots as offline, from the sweep's runs on W&B; the plots are logged to a
    `sweep-report` run in the sweep's group."""
    import optuna
    import wandb

    from ignite_app import sweep_report

    api = wandb.Api(timeout=API_TIMEOUT_SECONDS)
    path = "/".join(p for p in (entity or api.default_entity, project, sweep_id) if p)
    sweep = api.sweep(path)
    names = [p.name for p in spec.searched]
    rows, study = [], optuna.create_study(direction=spec.goal)
    distributions = _distributions(spec)
    for number, run_ in enumerate(sorted(sweep.runs, key=lambda r: r.created_at)):
        value = run_.summary.get(spec.metric) if spec.metric else None
        params = {n: _param_value(run_.config.get(n.replace("-", "_"))) for n in names}
        state = {"finished": "complete", "crashed": "failed", "failed": "failed", "killed": "failed"}.get(run_.state, run_.state)
        rows.append(sweep_report.TrialRow(number, state, value, params, run_.id, run_.url, None, "", dict(run_.config)))
        if state == "complete" and isinstance(value, (int, float)) and all(p in distributions for p in params):
            try:
                study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(value)))
            except ValueError:
                pass  # a value outside the file's distributions (the sweep was edited): left out of the plots only
    files = sweep_report.write_report(study, rows, spec, root)
    if files.plots:
        run_ = wandb.init(project=project, entity=entity, group=spec.name, job_type="sweep-report",
                          name=f"{spec.name}-report")
        run_.log({f"sweep/{p.stem}": wandb.Image(str(p)) for p in files.plots})
        run_.finish()


def _distributions(spec: SweepSpec) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for p in spec.searched:
        if p.kind == "categorical":
            out[p.name] = CategoricalDistribution(p.choices)
        elif p.kind == "int":
            out[p.name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[p.name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def _param_value(value: Any) -> Any:
    from ignite_app.sweep_config import agent_value

    return agent_value(value) if isinstance(value, list) else value
