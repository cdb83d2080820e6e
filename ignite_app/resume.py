"""`--resume SPEC` and `--auto-resume`: find the checkpoint file, load it safely, check it fits the model.

SPEC is one of
  path/to/checkpoint.pt             a checkpoint file
  path/to/dir                       its newest checkpoint (a run's output dir or its checkpoints/ dir)
  wandb/offline-run-...[:ALIAS]     the checkpoint artifact that offline run logged as `latest` (or ALIAS),
                                    checked against the digest its transaction log recorded
  wandb:ENTITY/PROJECT/NAME:ALIAS   a W&B artifact (online)
  wandb:ENTITY/PROJECT/RUN_ID       that run's newest checkpoint artifact (online)
"""
from __future__ import annotations

import pickle
from stat import S_ISREG
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ignite_app.errors import UserError
from ignite_app.state import FORMAT_VERSION, READABLE_VERSIONS

CHECKPOINT_GLOB = "checkpoint_*.pt"


@dataclass
class ResolvedCheckpoint:
    path: Path
    origin: str  # how the spec was resolved, for messages
    content: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        return self.content["meta"]


# ---------------------------------------------------------------- finding files


def checkpoint_files(directory: Path) -> dict[Path, tuple[int, int]]:
    """The checkpoint files under `directory` (its run dirs and checkpoints/ dirs included) -> (mtime_ns, size). A
    process that trains a run beside this one prunes its files at any instant: one gone before its stat is left out."""
    found = {}
    for path in directory.rglob(CHECKPOINT_GLOB):
        try:
            stat = path.stat()
        except OSError:
            continue
        if S_ISREG(stat.st_mode):
            found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def checkpoints_newest_first(directory: Path) -> list[Path]:
    """The checkpoint files under `directory` (its run dirs and checkpoints/ dirs included), newest first."""
    found = checkpoint_files(directory)
    return sorted(found, key=lambda p: (found[p][0], p.name), reverse=True)


def newest_checkpoint(directory: Path) -> Optional[Path]:
    """The most recently written checkpoint file under `directory`."""
    found = checkpoints_newest_first(directory)
    return found[0] if found else None


def is_offline_run_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob("run-*.wandb"))


def resolve_spec(spec: str, flag: str = "--resume") -> tuple[Path, str]:
    """A SPEC -> (local checkpoint file, description). Raises UserError with what was tried; `flag` is the option
    (or argument) the SPEC came from, for the messages."""
    if spec.startswith("wandb:"):
        from ignite_app import wandb_artifacts

        return wandb_artifacts.download_checkpoint(spec[len("wandb:"):])
    path = Path(spec).expanduser()
    head, sep, alias = spec.rpartition(":")
    if sep and is_offline_run_dir(Path(head).expanduser()):  # wandb/offline-run-...:best
        from ignite_app import wandb_artifacts

        return wandb_artifacts.checkpoint_from_offline_run(Path(head).expanduser(), alias)
    if path.is_file():
        return path, str(path)
    if is_offline_run_dir(path):
        from ignite_app import wandb_artifacts

        return wandb_artifacts.checkpoint_from_offline_run(path)
    if path.is_dir():
        newest = newest_checkpoint(path)
        if newest is None:
            raise UserError(
                f"{flag} {spec}: the directory holds no checkpoint files ({CHECKPOINT_GLOB}, searched recursively). "
                f"Point {flag} at a checkpoint file, a run's output directory, or an offline W&B run directory."
            )
        return newest, f"{newest} (newest in {path})"
    raise UserError(
        f"{flag} {spec}: no such file or directory. SPEC is a checkpoint file, a directory, an offline W&B run "
        "directory (wandb/offline-run-...), wandb:ENTITY/PROJECT/NAME:ALIAS or wandb:ENTITY/PROJECT/RUN_ID."
    )


# ---------------------------------------------------------------- loading


def _corrupt(origin: str, detail: str) -> UserError:
    return UserError(
        f"Cannot read the checkpoint {origin}: the file is truncated or corrupt ({detail}). Use an earlier "
        "checkpoint (checkpoints/ keeps --n-saved of them) or its W&B artifact."
    )


def load_checkpoint(path: Path, origin: str) -> ResolvedCheckpoint:
    """torch.load with weights_only=True; anything that would need arbitrary unpickling is refused."""
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one loses its central directory
        raise _corrupt(origin, "not a complete torch.save archive")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights only" not in str(exc).lower():
            raise _corrupt(origin, first) from None
        raise UserError(
            f"Refusing to load {origin}: it needs arbitrary unpickling, which weights_only=True does not allow "
            f"({first}). Only checkpoints written by ignite-app (tensors and plain values) are loaded; re-save the "
            "file from trusted code with plain state_dicts."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _corrupt(origin, str(exc).strip().splitlines()[0]) from None
    if not isinstance(content, dict) or "meta" not in content or "model" not in content or "trainer" not in content:
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise UserError(
            f"{origin} is not an ignite-app checkpoint (it holds {keys}; expected model, optimizer, trainer, meta, ...). "
            "Use a file that ignite-app wrote under OUTPUT_DIR/RUN_ID/checkpoints/."
        )
    version = content["meta"].get("format_version")
    if version not in READABLE_VERSIONS:
        raise UserError(
            f"{origin} has checkpoint format version {version}; this ignite-app reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Use it with the ignite-app version that wrote it."
        )
    if version == 1 and content["meta"].get("kind") == "best" and "checkpointer" in content:
        content["best_checkpointer"] = content.pop("checkpointer")  # version 1: a best file held its own state
    return ResolvedCheckpoint(path, origin, content)


def check_model_fits(model: torch.nn.Module, checkpoint: ResolvedCheckpoint) -> None:
    """Name the keys that differ, instead of load_state_dict's wall of text."""
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in checkpoint.content["model"].items()}
    missing = sorted(set(have) - set(saved))
    unexpected = sorted(set(saved) - set(have))
    shapes = sorted(f"{k} {saved[k]} vs {have[k]}" for k in set(have) & set(saved) if have[k] != saved[k])
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {', '.join(missing[:8])}")
        if unexpected:
            parts.append(f"not in this model: {', '.join(unexpected[:8])}")
        if shapes:
            parts.append(f"different shapes (checkpoint vs model): {', '.join(shapes[:8])}")
        cfg = checkpoint.meta.get("config", {})
        raise UserError(
            f"The checkpoint {checkpoint.origin} was written for another architecture "
            f"(model={cfg.get('model')}, kernels={cfg.get('kernels')}): {'; '.join(parts)}. "
            "Resume with the same --model and --kernels as the run that wrote it (leave them off to take the checkpoint's)."
        )


# what makes a run the same experiment: the data, model, optimization and training-extras settings, except those a
# resume may change (train longer, another device, how data is loaded or where it lies)
IDENTITY_GROUPS = ("data", "model", "optimization", "extras")
NOT_IDENTITY = ("epochs", "device", "num_workers", "data_dir", "preset", "val_batch_size", "max_memory")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    from ignite_app.config import FIELDS

    return {name: config.get(name) for name, f in FIELDS.items()
            if f.metadata["group"] in IDENTITY_GROUPS and name not in NOT_IDENTITY}


def differences(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """`name (theirs vs mine)` for each identity value that differs."""
    a, b = identity(mine), identity(theirs)
    return [f"{k} ({b[k]!r} vs {a[k]!r})" for k in a if a[k] != b[k] and not (a[k] in ((), []) and b[k] in ((), []))]


def matching_runs(output_dir: Path, config: dict[str, Any]) -> tuple[list[Path], list[str]]:
    """(run directories under output_dir whose config.yaml is this experiment, why each other run is not)."""
    import yaml

    matched, others = [], []
    for run_dir in sorted(p for p in output_dir.iterdir() if (p / "config.yaml").is_file()):
        try:
            theirs = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        diff = differences(config, theirs)
        (others.append(f"{run_dir.name}: {', '.join(diff[:4])}") if diff else matched.append(run_dir))
    return matched, others


def run_name(run_dir: Path) -> Optional[str]:
    """The --wandb-name a run was started with (its config.yaml), or None."""
    import yaml

    try:
        return (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("wandb_name")
    except (OSError, yaml.YAMLError):
        return None


def find_auto_resume(output_dir: str, run_id: Optional[str] = None, config: Optional[dict[str, Any]] = None,
                     warn: Callable[[str], None] = print) -> Optional[ResolvedCheckpoint]:
    """The newest intact checkpoint of this experiment under output_dir: of the runs whose config.yaml has the same
    identity as `config` (the resolved config of this command, less what a resume may change) and, with
    --wandb-name, that name; or of output_dir/run_id when the run id is given (--run-id, WANDB_RUN_ID, a sweep
    agent's trials that share one output dir). A newer
    file that does not load (cut off by a crash, corrupt) is skipped with one warning line: every intact file is a
    resume point. When runs exist but none is this experiment, `warn` says why for each. The checkpoint comes back
    loaded: the check that it is intact is the load the run uses."""
    directory = Path(output_dir) / run_id if run_id else Path(output_dir)
    if not directory.is_dir():
        return None
    candidates = checkpoints_newest_first(directory)
    if config is not None and not run_id:
        matched, others = matching_runs(directory, config)
        if matched and config.get("wandb_name"):  # --wandb-name picks one of this experiment's runs
            named = [run for run in matched if run_name(run) == config["wandb_name"]]
            if not named:
                warn(f"--auto-resume: no run of this experiment under {output_dir} is named "
                     f"{config['wandb_name']!r} (--wandb-name); theirs: "
                     f"{', '.join(f'{run.name} {run_name(run)!r}' for run in matched[:5])}.")
            matched = named
        candidates = [p for p in candidates if any(run in p.parents for run in matched)]
        if not matched and others:
            warn(f"--auto-resume: no run under {output_dir} is this experiment (run: their value vs yours): "
                 f"{'; '.join(others[:5])}.")
    for path in candidates:
        try:
            return load_checkpoint(path, f"{path} (newest under {output_dir})")
        except UserError as error:
            if not path.exists():  # pruned meanwhile by the process that trains that run (it holds its lock)
                continue
            warn(f"--auto-resume: skipping {path}, it does not load ({str(error).split(': ', 1)[-1][:160]})")
    return None


def run_dir_of(checkpoint_path: Path) -> Optional[Path]:
    """OUTPUT_DIR/RUN_ID when the file lies in OUTPUT_DIR/RUN_ID/checkpoints/, else None."""
    parent = checkpoint_path.resolve().parent
    return parent.parent if parent.name == "checkpoints" and (parent.parent / "config.yaml").is_file() else None


def read(spec: str, flag: str = "--resume") -> ResolvedCheckpoint:
    path, origin = resolve_spec(spec, flag)
    return load_checkpoint(path, origin)


# ---------------------------------------------------------------- does the checkpoint fit this run's data


# the settings that decide how many batches an epoch has (besides the dataset's own size)
EPOCH_LENGTH_SETTINGS = ("batch_size", "val_fraction", "data_dir", "skip_bad_images")
# the settings that draw the validation split from the training images
SPLIT_SETTINGS = ("val_fraction", "seed")


def check_same_data(config: dict[str, Any], checkpoint: ResolvedCheckpoint) -> None:
    """A run continues on the dataset it was trained on: another --dataset would train the checkpoint's model on
    other images (other classes, another shape) under the same run id and W&B run."""
    saved = checkpoint.meta.get("config", {}).get("dataset")
    if saved is not None and saved != config["dataset"]:
        raise UserError(
            f"The checkpoint {checkpoint.origin} was trained on --dataset {saved}, and this command asks for "
            f"--dataset {config['dataset']}: a resume continues the same run on the same data. Leave --dataset off "
            f"(a resume takes the checkpoint's), or start a new run on {config['dataset']} without --resume."
        )
    saved_config = checkpoint.meta.get("config", {})
    changed = [f"--{k.replace('_', '-')} {saved_config[k]} -> {config[k]}" for k in SPLIT_SETTINGS
               if k in saved_config and saved_config[k] != config[k]]
    if changed:
        raise UserError(
            f"The checkpoint {checkpoint.origin} was trained with another validation split ({', '.join(changed)}): "
            "the new validation split would hold images the model was trained on, and its validation accuracy (and "
            "the best checkpoint chosen by it) would be inflated. Leave these flags off (a resume takes the "
            "checkpoint's), or start a new run with them."
        )


def epoch_realignment(config: dict[str, Any], checkpoint: ResolvedCheckpoint, epoch_length: int) -> Optional[str]:
    """When this run's epoch has another length than the checkpoint's (another --batch-size, --val-fraction, more or
    fewer images), the run continues from the start of the epoch it was in, renumbered to the new length: a warning
    that it is no longer bit-exact (None when the length is the same). Refused (UserError) when that would move the
    iteration count, which is the W&B step axis and names the checkpoints, backwards."""
    trainer = checkpoint.content["trainer"]
    saved_length, iteration = int(trainer["epoch_length"]), int(trainer["iteration"])
    if saved_length == epoch_length:
        return None
    epoch, into = divmod(iteration, saved_length)
    restart = epoch * epoch_length
    saved_config = checkpoint.meta.get("config", {})
    changed = [f"--{k.replace('_', '-')} {saved_config[k]} -> {config[k]}" for k in EPOCH_LENGTH_SETTINGS
               if k in saved_config and saved_config[k] != config[k]]
    why = (f"epoch length {saved_length} -> {epoch_length} iterations ("
           + (", ".join(changed) if changed else "the training set has another size") + ")")
    if restart < iteration:
        boundary = (f"; or resume from its epoch-{epoch} checkpoint (checkpoint_{epoch * saved_length}.pt) if it is "
                    "still there" if into and epoch and epoch * epoch_length >= epoch * saved_length else "")
        raise UserError(
            f"Cannot resume {checkpoint.origin} with this data order: {why}. The run would continue from the start of "
            f"epoch {epoch + 1}, iteration {restart}, but the checkpoint is at iteration {iteration}, and the "
            "iteration count (the W&B step axis and the checkpoint numbers) cannot go backwards. Resume with the "
            f"checkpoint's settings ({', '.join(c.split(' ->')[0] for c in changed) or 'the same data'}){boundary}; "
            "or start a new run with the new settings."
        )
    redo = f", and the {into} iterations of epoch {epoch + 1} already trained are trained again" if into else ""
    return (f"Warning: {why}. The run continues from the start of epoch {epoch + 1} at iteration {restart} "
            f"(was {iteration}){redo}: it is no longer bit-exact with an uninterrupted run.")

