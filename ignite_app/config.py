"""The run's single configuration object: defaults, range checks, YAML in and out.

Importing this module must stay cheap (no torch, no wandb): `train.py --help` builds its parser from it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from ignite_app.errors import UserError

DATASETS = ("mnist", "fashion-mnist", "digits")
MODELS = ("convnet", "net")
OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("auto", "online", "offline", "disabled")
WATCH_MODES = ("off", "gradients", "parameters", "all")


def _opt(default: Any, help: str, group: str, **extra: Any) -> Any:
    """A dataclass field that carries its whole schema: CLI help and group, and the checks every source of values
    (flags, --config files, presets, checkpoints, sweeps) goes through: `choices`, `min`/`max` (inclusive),
    `above`/`below` (exclusive), `item` (element type of a list), `repeat` (a repeatable flag)."""
    meta = {"help": help, "group": group, **extra}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    """Everything a run depends on. Defaults follow the W&B PyTorch tutorial (convnet 16/32, Adam, lr 0.005)."""

    # data
    dataset: str = _opt("mnist", "dataset to train on", "data", choices=DATASETS)
    data_dir: Optional[str] = _opt(
        None, "where the dataset files are or will be downloaded (default: system dir, then ~/.cache/ignite-app/data)", "data"
    )
    val_fraction: float = _opt(0.1, "fraction of the training set held out for validation (fixed by --seed)", "data",
                                above=0.0, below=1.0)
    num_workers: int = _opt(0, "data-loader worker processes (the data is in memory; 0 is usually fastest)", "data", min=0)
    # model
    model: str = _opt("convnet", "network: convnet (W&B tutorial) or net (Ignite example, with dropout)", "model", choices=MODELS)
    kernels: tuple = _opt((16, 32), "convnet channels of its two conv layers, e.g. 16 32 or [16,32]", "model", item=int)
    channels_last: bool = _opt(
        True, "keep conv weights and activations NHWC (oneDNN's fast layout on CPUs, ~1.3x; same-seed runs stay "
        "bit-identical, but differ in the last bits from --no-channels-last)", "model",
    )
    # optimization
    preset: Optional[str] = _opt(
        None, "start from a tuned set of values (flags still win): fast = 2 epochs of one-cycle at lr 0.01, "
        "test accuracy 0.90 on Fashion-MNIST in about 15 s on 2 cores", "optimization", choices=("fast",),
    )
    optimizer: str = _opt("adam", "optimizer", "optimization", choices=OPTIMIZERS)
    lr: float = _opt(0.005, "learning rate", "optimization", above=0.0)
    momentum: float = _opt(0.5, "SGD momentum (ignored by adam/adamw)", "optimization", min=0.0, below=1.0)
    weight_decay: float = _opt(0.0, "weight decay", "optimization", min=0.0)
    epochs: int = _opt(5, "number of training epochs", "optimization", min=1)
    batch_size: int = _opt(128, "training batch size", "optimization", min=1)
    val_batch_size: int = _opt(1000, "validation and test batch size", "optimization", min=1)
    seed: int = _opt(42, "random seed: same seed and flags give the same metrics on the CPU", "optimization",
                     min=0, max=2**32 - 1)
    device: str = _opt("auto", "auto (cuda when available), cpu or cuda", "optimization", choices=DEVICES)
    # training extras (Ignite handlers and engine options)
    lr_schedule: str = _opt("none", "lr schedule, stepped every iteration (Ignite param schedulers)", "extras",
                            choices=("none", "cosine", "step", "onecycle"))
    warmup_iters: int = _opt(0, "linear lr warm-up from 0 over N iterations (not with onecycle, which has its own)", "extras",
                             min=0)
    lr_step_epochs: int = _opt(2, "step schedule: multiply the lr by --lr-gamma every N epochs", "extras", min=1)
    lr_gamma: float = _opt(0.1, "step schedule: the factor", "extras", above=0.0, max=1.0)
    early_stopping: int = _opt(0, "stop after N epochs without a better validation accuracy (0: off)", "extras", min=0)
    clip_grad_norm: float = _opt(0.0, "clip the gradient norm to this value before each step (0: off)", "extras", min=0.0)
    terminate_on_nan: bool = _opt(True, "stop when the loss becomes NaN or infinite (the checkpoints stay)", "extras")
    amp: bool = _opt(False, "mixed precision: CUDA AMP with a GradScaler, or bf16 autocast on the CPU", "extras")
    compile: bool = _opt(False, "torch.compile the model", "extras")
    accumulation_steps: int = _opt(1, "accumulate gradients over N iterations per optimizer step", "extras", min=1)
    # logging
    log_interval: int = _opt(10, "log the training loss and lr every N iterations", "logging", min=1)
    progress_bar: bool = _opt(True, "show Ignite's progress bar", "logging")
    wandb_project: Optional[str] = _opt(None, "W&B project (default: $WANDB_PROJECT or ignite-app)", "wandb")
    wandb_entity: Optional[str] = _opt(None, "W&B entity (default: $WANDB_ENTITY or your default entity)", "wandb")
    wandb_name: Optional[str] = _opt(None, "W&B run name", "wandb")
    wandb_tags: tuple = _opt((), "W&B run tags", "wandb", item=str)
    wandb_notes: Optional[str] = _opt(None, "W&B run notes", "wandb")
    wandb_group: Optional[str] = _opt(None, "W&B run group", "wandb")
    wandb_mode: str = _opt(
        "auto", "auto: online with an API key, else offline ($WANDB_MODE wins); or online/offline/disabled", "wandb",
        choices=WANDB_MODES,
    )
    watch: str = _opt("gradients", "wandb.watch: what to log of the model", "wandb", choices=WATCH_MODES)
    watch_freq: int = _opt(1000, "wandb.watch: log every N steps", "wandb", min=1)
    # outputs, checkpoints and resuming
    output_dir: str = _opt("runs", "each run writes config.yaml and its checkpoints to OUTPUT_DIR/RUN_ID", "outputs")
    checkpoint_every: int = _opt(0, "also checkpoint every N iterations (0: only at the end of each epoch)", "outputs", min=0)
    n_saved: int = _opt(2, "keep this many latest checkpoints on disk (the best one is kept besides)", "outputs", min=1)
    resume: Optional[str] = _opt(
        None, "continue from SPEC: a checkpoint file or directory, an offline W&B run dir, "
        "wandb:ENTITY/PROJECT/NAME:ALIAS or wandb:ENTITY/PROJECT/RUN_ID", "outputs",
    )
    auto_resume: bool = _opt(False, "continue from the newest checkpoint under --output-dir if there is one", "outputs")
    # ONNX
    onnx: bool = _opt(True, "export the model to ONNX at the end, verify it with onnxruntime and log it to W&B", "onnx")
    onnx_on_best: bool = _opt(False, "also export on each new best validation accuracy (model-best.onnx)", "onnx")
    onnx_opset: int = _opt(18, "ONNX opset to export", "onnx", min=7, max=23)
    onnx_exporter: str = _opt("dynamo", "torch.onnx exporter: dynamo (dynamic_shapes) or torchscript (dynamic_axes)", "onnx",
                              choices=("dynamo", "torchscript"))
    onnx_strict: bool = _opt(False, "make a failed ONNX export or verification fatal (default: report and go on)", "onnx")
    # extensions
    handler: tuple = _opt(
        (), "attach a handler: package.module:callable or path/file.py:callable, optionally followed by "
        "JSON keyword arguments; repeatable", "extensions", item=str, repeat=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples), as written to YAML and given to W&B."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: Path) -> None:
        path.write_text(self.to_yaml())


PRESETS: dict[str, dict[str, Any]] = {
    # measured in bench/results.md: the quickest flags found to reach 0.90 test accuracy on Fashion-MNIST
    "fast": {"epochs": 2, "lr_schedule": "onecycle", "lr": 0.01},
}


def field_names() -> list[str]:
    return [f.name for f in fields(Config)]


def load_yaml(path: str) -> dict[str, Any]:
    """Read a --config file: a mapping of Config field names (kebab or snake case) to values."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"Cannot read the config file {path!r}: {exc.strerror}. Check the path given to --config.") from None
    except yaml.YAMLError as exc:
        raise UserError(f"The config file {path!r} is not valid YAML ({exc}). Fix the file or pass the values as flags.") from None
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"The config file {path!r} must hold a mapping of option names to values, not {type(data).__name__}.")
    known = set(field_names())
    normalized = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(normalized) - known)
    if unknown:
        raise UserError(
            f"The config file {path!r} has unknown option(s): {', '.join(unknown)}. "
            f"Known options are the long flags of `train.py --help`, e.g. {', '.join(sorted(known)[:5])}, ..."
        )
    return normalized


def _range_problem(name: str, value: Any, meta: dict[str, Any]) -> Optional[str]:
    """What is wrong with one value against its field's schema, or None."""
    flag = "--" + name.replace("_", "-")
    if "choices" in meta and value is not None and value not in meta["choices"]:
        return f"{flag} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            return f"{flag} must be at least {meta['min']}, got {value}"
        if "max" in meta and value > meta["max"]:
            return f"{flag} must be at most {meta['max']}, got {value}"
        if "above" in meta and not value > meta["above"]:
            return f"{flag} must be greater than {meta['above']}, got {value}"
        if "below" in meta and not value < meta["below"]:
            return f"{flag} must be less than {meta['below']}, got {value}"
    return None


def _check(ok: bool, message: str, problems: list[str]) -> None:
    if not ok:
        problems.append(message)


def validate(config: Config) -> Config:
    """Every field against its schema (choices, ranges), then the checks that span fields; raises one UserError
    listing every problem."""
    c = config
    p = [m for f in fields(Config) if (m := _range_problem(f.name, getattr(c, f.name), dict(f.metadata)))]
    _check(not (c.resume and c.auto_resume), "--resume and --auto-resume cannot be used together", p)
    _check(not (c.warmup_iters and c.lr_schedule == "onecycle"),
           "--warmup-iters does not combine with --lr-schedule onecycle (one-cycle warms up by itself)", p)
    _check(
        len(c.kernels) == 2 and all(k >= 1 for k in c.kernels),
        f"--kernels needs two positive channel counts (e.g. 16 32), got {list(c.kernels)}",
        p,
    )
    if p:
        raise UserError("Invalid configuration: " + "; ".join(p) + ". Fix the flag(s) or the --config file and run again.")
    return c
