"""The run's single configuration schema: every value, wherever it comes from (flags, --config files, presets, a
checkpoint's config on resume, a W&B sweep agent's `--key=value`), is converted and checked here, and only here.

    defaults < --preset < the checkpoint's config (resuming) < the --config file < flags

Each field's metadata is its whole schema (type from its default, `choices`, `min`/`max`, `above`/`below`, `item`
for lists, `repeat` for a repeatable flag); `resolve` converts each source's values with the same rules (text is
read as YAML/Python literals would read it: `None`/`null` unset, `[a, 'b c']` a list, `1.7` never an int) and
`validate` checks ranges and the rules that span fields. Importing this module must stay cheap (no torch, no
wandb): `train.py --help` builds its parser from it.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import re
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from ignite_app.errors import UserError

# names and defaults, defined once (the CLI, the scripts, the handlers and the docs' tables read them from here)
DATASETS = ("mnist", "fashion-mnist", "digits", "cifar10", "imagefolder")
MODELS = ("convnet", "net")  # our own; any torchvision classification model name works too (`--list-models`)
MAX_IMAGE_SIZE = 2048
OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("auto", "online", "offline", "disabled")
WATCH_MODES = ("off", "gradients", "parameters", "all")
LOG_CHECKPOINTS = ("all", "best-and-last", "none")  # Lightning WandbLogger's log_model "all", True, False
DEFAULT_LOG_CHECKPOINTS = "best-and-last"
BACKENDS = ("auto", "nccl", "gloo")
LR_SCHEDULES = ("none", "cosine", "step", "onecycle")
ONNX_EXPORTERS = ("dynamo", "torchscript")
DEFAULT_ONNX_EXPORTER = "dynamo"
DEFAULT_ONNX_OPSET = 18
# the opsets each torch.onnx exporter writes as asked (torch 2.14 with onnxscript, measured for 7..24 on both models;
# export_onnx also checks the written file's opset_import): dynamo implements opset 18 and up and reaches lower ones
# only through a version converter that, when it fails (opsets <= 14 here), silently keeps 18; 24 is beyond what the
# torchscript exporter writes and what we verify with onnxruntime
ONNX_OPSETS = {"dynamo": (18, 23), "torchscript": (7, 23)}
# the batch sizes an exported model is verified at (onnxruntime vs PyTorch); a smaller validation split is enough:
# data.verification_images repeats its images (and the test set's) up to the largest
ONNX_VERIFY_BATCH_SIZES = (1, 37)
SEED_MAX = 2**32 - 1  # numpy's seed range; torch's is wider
# --preset NAME: values that replace the defaults (flags, files and checkpoints still win)
PRESETS: dict[str, dict[str, Any]] = {
    # measured in bench/results.md: the quickest flags found to reach 0.90 test accuracy on Fashion-MNIST
    "fast": {"epochs": 2, "lr_schedule": "onecycle", "lr": 0.01},
}


def _opt(default: Any, help: str, group: str, **extra: Any) -> Any:
    """A dataclass field that carries its whole schema: CLI help and group, and the checks every source of values
    (flags, --config files, presets, checkpoints, sweeps) goes through: `choices`, `min`/`max` (inclusive),
    `above`/`below` (exclusive), `item` (element type of a list), `repeat` (a repeatable flag), `type` (the value
    type of a field whose default is None: str unless given; the type of the default otherwise)."""
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
    image_size: Optional[int] = _opt(
        None, "resize images to SIZE x SIZE (default: the dataset's native size; for imagefolder the most common "
        "size among the training images)", "data", type=int, min=1, max=MAX_IMAGE_SIZE,
    )
    max_memory: Optional[str] = _opt(
        None, "imagefolder: decoded images up to this size (e.g. 2G, 500M) are kept in memory, larger datasets go to "
        "a memory-mapped uint8 cache file on disk (default: a quarter of the machine's RAM)", "data",
    )
    skip_bad_images: bool = _opt(False, "imagefolder: skip unreadable image files (and count them) instead of stopping",
                                 "data")
    augment: bool = _opt(False, "random crop with padding and horizontal flip of each training image, per batch "
                         "(seeded: resumes stay bit-exact)", "data")
    # model
    model: str = _opt("convnet", "network: convnet (W&B tutorial), net (Ignite example, with dropout), or any "
                      "torchvision classification model by name, e.g. resnet18 (see --list-models)", "model")
    pretrained: bool = _opt(False, "torchvision models: start from torchvision's pretrained weights (downloaded once)",
                            "model")
    kernels: tuple = _opt((16, 32), "convnet channels of its two conv layers, e.g. 16 32 or [16,32]", "model", item=int)
    channels_last: bool = _opt(
        True, "keep conv weights and activations NHWC (oneDNN's fast layout on CPUs, ~1.3x; same-seed runs stay "
        "bit-identical, but differ in the last bits from --no-channels-last)", "model",
    )
    # optimization
    preset: Optional[str] = _opt(
        None, "start from a tuned set of values (flags still win): fast = 2 epochs of one-cycle at lr 0.01, "
        "test accuracy 0.90 on Fashion-MNIST in about 15 s on 2 cores", "optimization", choices=tuple(PRESETS),
    )
    optimizer: str = _opt("adam", "optimizer", "optimization", choices=OPTIMIZERS)
    lr: float = _opt(0.005, "learning rate", "optimization", above=0.0)
    momentum: float = _opt(0.5, "SGD momentum (ignored by adam/adamw)", "optimization", min=0.0, below=1.0)
    weight_decay: float = _opt(0.0, "weight decay", "optimization", min=0.0)
    epochs: int = _opt(5, "number of training epochs", "optimization", min=1)
    batch_size: int = _opt(128, "training batch size: the global batch, split evenly across processes when there "
                           "are several (torchrun, --nproc-per-node)", "optimization", min=1)
    val_batch_size: int = _opt(1000, "validation and test batch size (global, like --batch-size)", "optimization", min=1)
    seed: int = _opt(42, "random seed: same seed and flags give the same metrics on the CPU", "optimization",
                     min=0, max=SEED_MAX)
    device: str = _opt("auto", "auto (cuda when available), cpu or cuda", "optimization", choices=DEVICES)
    # training extras (Ignite handlers and engine options)
    lr_schedule: str = _opt("none", "lr schedule, stepped every iteration (Ignite param schedulers)", "extras",
                            choices=LR_SCHEDULES)
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
    test_report: bool = _opt(True, "at the end: per-class precision/recall and the confusion matrix of the test set, "
                             "printed, logged to W&B and written to test_report.csv/.png in the run directory", "logging")
    wandb_project: Optional[str] = _opt(None, "W&B project (default: $WANDB_PROJECT or ignite-app)", "wandb")
    wandb_entity: Optional[str] = _opt(None, "W&B entity (default: $WANDB_ENTITY or your default entity)", "wandb")
    wandb_name: Optional[str] = _opt(None, "W&B run name; with --auto-resume, continue the run of this name", "wandb")
    run_id: Optional[str] = _opt(None, "the run's id, naming OUTPUT_DIR/RUN_ID and the W&B run (default: $WANDB_RUN_ID, "
                                 "else a new one); with --auto-resume, continue that run", "wandb")
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
    log_checkpoints: str = _opt(
        DEFAULT_LOG_CHECKPOINTS, "which checkpoints become W&B artifact versions: all, best-and-last (online the "
        "superseded versions are deleted; offline both are logged when the run ends) or none", "outputs",
        choices=LOG_CHECKPOINTS,
    )
    resume: Optional[str] = _opt(
        None, "continue from SPEC: a checkpoint file or directory, an offline W&B run dir, "
        "wandb:ENTITY/PROJECT/NAME:ALIAS or wandb:ENTITY/PROJECT/RUN_ID", "outputs",
    )
    auto_resume: bool = _opt(False, "continue from the newest checkpoint under --output-dir if there is one", "outputs")
    wait_for_lock: bool = _opt(False, "when another process is training this run (its lock is held), wait for it "
                               "instead of stopping with exit code 2", "outputs")
    # ONNX
    onnx: bool = _opt(True, "export the model to ONNX at the end, verify it with onnxruntime and log it to W&B", "onnx")
    onnx_on_best: bool = _opt(False, "also export on each new best validation accuracy (model-best.onnx)", "onnx")
    onnx_opset: int = _opt(DEFAULT_ONNX_OPSET, "ONNX opset to write: " + ", ".join(
        f"{name} {low}..{high}" for name, (low, high) in ONNX_OPSETS.items()), "onnx",
        min=min(low for low, _ in ONNX_OPSETS.values()), max=max(high for _, high in ONNX_OPSETS.values()))
    onnx_exporter: str = _opt(DEFAULT_ONNX_EXPORTER, "torch.onnx exporter: dynamo (dynamic_shapes) or torchscript "
                              "(dynamic_axes)", "onnx", choices=ONNX_EXPORTERS)
    onnx_strict: bool = _opt(False, "make a failed ONNX export or verification fatal (default: report and go on)", "onnx")
    # several processes
    nproc_per_node: int = _opt(1, "spawn N training processes on this machine (idist.Parallel); only without a launcher: "
                               "under torchrun or srun, the launcher's process count applies", "distributed", min=1)
    backend: str = _opt("auto", "torch.distributed backend with several processes: auto = nccl on CUDA GPUs, gloo on "
                        "the CPU", "distributed", choices=BACKENDS)
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


FIELDS: dict[str, Field] = {f.name: f for f in fields(Config)}

# text that means "unset" for an optional value: YAML's null spellings and Python's None (what a W&B sweep agent
# writes for a null parameter: `--wandb_name=None`)
NONE_WORDS = frozenset({"none", "null", "~", ""})
TRUE_WORDS = frozenset({"true", "yes", "on", "y", "t", "1"})  # YAML 1.1's booleans and Python's True
FALSE_WORDS = frozenset({"false", "no", "off", "n", "f", "0"})


def field_names() -> list[str]:
    return list(FIELDS)


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def kind_of(f: Field) -> type:
    """The Python type of a field's values (the type of its default; `type=` in its metadata for a None default)."""
    default = default_of(f)
    if f.metadata.get("repeat") or "item" in f.metadata:
        return tuple
    if default is None:
        return f.metadata.get("type", str)
    return type(default)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _scalar(kind: type, value: Any, choices: Sequence[Any] = ()) -> Any:
    """One value as `kind`; text is read by YAML/Python literal rules. Raises ValueError("must be ...")."""
    if isinstance(value, str):
        text = value.strip()
        if kind is str:
            return value
        if kind is bool:
            if text.lower() in TRUE_WORDS:
                return True
            if text.lower() in FALSE_WORDS:
                return False
        else:
            try:
                return int(text) if kind is int else _scalar(float, float(text))
            except ValueError:
                try:
                    return _scalar(kind, float(text))  # "2.0", "1e3" for an int; "1.7" is refused there
                except ValueError as exc:
                    if "must be" in str(exc):
                        raise
        raise ValueError(f"must be {_KIND_WORDS[kind]}, got {value!r}")
    if isinstance(value, bool):
        if kind is bool:
            return value
        # YAML reads an unquoted `off`/`on` as a boolean: map it back to the choice it spelled
        words = TRUE_WORDS if value else FALSE_WORDS
        spelled = [c for c in choices if isinstance(c, str) and c.lower() in words]
        if kind is str and spelled:
            return spelled[0]
    elif isinstance(value, int):
        if kind is int:
            return value
        if kind is float:
            return float(value)
        if kind is str:
            return str(value)
    elif isinstance(value, float):
        if kind in (int, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        if kind is float:
            return value
        if kind is int and value.is_integer():
            return int(value)
        if kind is str:
            return str(value)
    raise ValueError(f"must be {_KIND_WORDS.get(kind, kind.__name__)}, got {value!r}")


def split_list_text(text: str) -> list[Any]:
    """A list given as text: `[16, 32]` or `['a', 'b c']` (Python or YAML flow syntax, what a sweep agent writes),
    `16,32`, one item, or `None`/`null` for an empty list."""
    text = text.strip()
    if text.lower() in NONE_WORDS:
        return []
    if text.startswith("["):
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            try:
                items = yaml.safe_load(text)
            except yaml.YAMLError:
                raise ValueError(f"cannot read {text!r} as a list (write it as [a, b] or a b)") from None
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"cannot read {text!r} as a list")
        return list(items)
    return [part.strip() for part in text.split(",") if part.strip()]


def coerce(name: str, value: Any, from_text: bool = False) -> Any:
    """`value` as field `name`'s type, or ValueError("must be ..."). `from_text`: the value is command-line text
    (lists are then split by `split_list_text`); otherwise it is typed already (YAML, a checkpoint, a preset)."""
    f = FIELDS[name]
    meta, kind, optional = f.metadata, kind_of(f), default_of(f) is None
    if meta.get("repeat"):  # one string per occurrence (a handler spec holds spaces and commas: never split)
        if value is not None and not isinstance(value, (str, list, tuple)):  # YAML `handler: 5` or a mapping
            raise ValueError(f"must be text or a list of texts (one per entry), got {value!r}")
        items = [value] if isinstance(value, str) else list(value or ())
        bad = [v for v in items if not isinstance(v, str)]
        if bad:
            raise ValueError(f"must be text (one per entry), got {bad[0]!r}")
        # a sweep agent's null (`--handler=None`) means no handler, as for the other lists
        return tuple(v for v in items if not (from_text and v.strip().lower() in NONE_WORDS))
    if kind is tuple:
        if value is None:
            return ()
        if from_text or isinstance(value, str):
            texts = value if isinstance(value, (list, tuple)) else [value]
            value = [item for text in texts for item in split_list_text(str(text))]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_scalar(meta["item"], v) for v in value)
    # text that means null: unset for an optional value; for a required free-text one (--output-dir) not a value
    # (`--output-dir=None` from a sweep agent would otherwise write under ./None, and '' into the current directory)
    spelled_null = isinstance(value, str) and value.strip().lower() in NONE_WORDS and (optional or (
        kind is str and "choices" not in meta))
    if value is None or spelled_null:
        if optional:
            return None
        raise ValueError("needs a value")
    return _scalar(kind, value, meta.get("choices", ()))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a config file that says one thing twice is refused."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str) -> dict[str, Any]:
    """Read a --config file: a mapping of Config field names (kebab or snake case) to values, not yet converted."""
    hint = "Fix the file or pass the values as flags."
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"The config file {path!r} is not a UTF-8 text file (a binary file?). --config takes a YAML "
                        "file of option names and values, like the config.yaml each run writes.") from None
    except OSError as exc:
        raise UserError(f"Cannot read the config file {path!r}: {exc.strerror}. Check the path given to --config.") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"The config file {path!r} is not valid YAML ({' '.join(str(exc).split())}). {hint}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"The config file {path!r} must hold a mapping of option names to values, not {type(data).__name__}.")
    normalized: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in spelled:
            raise UserError(f"The config file {path!r} sets {name} twice, as {spelled[name]!r} and {key!r}; keep one. {hint}")
        spelled[name], normalized[name] = str(key), value
    unknown = sorted(set(normalized) - set(FIELDS))
    if unknown:
        raise UserError(
            f"The config file {path!r} has unknown option(s): {', '.join(unknown)}. "
            f"Known options are the long flags of `train.py --help`, e.g. {', '.join(sorted(FIELDS)[:5])}, ..."
        )
    return normalized


# where a value came from, for messages: flags and defaults are named as flags, the rest say their source
FLAGS, DEFAULTS, CHECKPOINT = "flags", "defaults", "checkpoint"


def _where(name: str, origin: str) -> str:
    if origin in (FLAGS, DEFAULTS):
        return flag_of(name)
    if origin == CHECKPOINT:
        return f"{name} (from the checkpoint's config)"
    if origin.startswith("preset:"):
        return f"{name} (from --preset {origin[7:]})"
    return f"{name} in {origin}"


def resolve(
    flags: Optional[Mapping[str, Any]] = None,
    file: Optional[tuple[str, Mapping[str, Any]]] = None,
    base: Optional[Mapping[str, Any]] = None,
    not_inherited: Sequence[str] = (),
) -> "Config":
    """One Config from every source, each value converted by the same rules and the result validated:
    defaults < --preset < `base` (a checkpoint's config) < `file` (path, values) < `flags` (command-line text).
    Keys of `base` the schema no longer has, and those in `not_inherited`, are dropped."""
    layers: list[tuple[str, Mapping[str, Any], bool]] = []
    if base:
        layers.append((CHECKPOINT, {k: v for k, v in base.items() if k in FIELDS and k not in not_inherited}, False))
    if file:
        layers.append((file[0], file[1], False))
    layers.append((FLAGS, flags or {}, True))
    values: dict[str, tuple[Any, str]] = {}
    problems = []
    for origin, given, from_text in layers:
        for name, raw in given.items():
            try:
                values[name] = (coerce(name, raw, from_text), origin)
            except ValueError as exc:
                problems.append(f"{_where(name, origin)} {exc}")
    if problems:
        raise UserError("Invalid configuration: " + "; ".join(problems) + ". Fix the value(s) and run again.")
    preset, _ = values.get("preset", (None, DEFAULTS))
    merged: dict[str, tuple[Any, str]] = {}
    if preset in PRESETS:  # an unknown preset is reported by validate (its choices)
        merged = {k: (coerce(k, v), f"preset:{preset}") for k, v in PRESETS[preset].items()}
    merged.update(values)
    config = Config(**{k: v for k, (v, _) in merged.items()})
    return validate(config, {k: origin for k, (_, origin) in merged.items()})


def _range_problem(value: Any, meta: Mapping[str, Any], where: str) -> Optional[str]:
    """What is wrong with one value against its field's choices and range, or None."""
    if "choices" in meta and value is not None and value not in meta["choices"]:
        return f"{where} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            return f"{where} must be at least {meta['min']}, got {value}"
        if "max" in meta and value > meta["max"]:
            return f"{where} must be at most {meta['max']}, got {value}"
        if "above" in meta and not value > meta["above"]:
            return f"{where} must be greater than {meta['above']}, got {value}"
        if "below" in meta and not value < meta["below"]:
            return f"{where} must be less than {meta['below']}, got {value}"
    return None


def check_value(name: str, value: Any, where: Optional[str] = None) -> Any:
    """One value through field `name`'s schema (type, choices, range), for the companion scripts' options that
    share a Config field (predict.py --batch-size, export_onnx.py --opset, ...). Raises UserError."""
    where = where or flag_of(name)
    try:
        value = coerce(name, value, from_text=isinstance(value, str))
    except ValueError as exc:
        raise UserError(f"{where} {exc}.") from None
    if problem := _range_problem(value, FIELDS[name].metadata, where):
        raise UserError(problem + ".")
    return value


_SIZE_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
               "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def parse_size(text: str) -> Optional[int]:
    """'2G', '500M', '1.5GB', '1000000' -> bytes (binary units); None when it is not a size."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        return None
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def _check(ok: bool, message: str, problems: list[str]) -> None:
    if not ok:
        problems.append(message)


def onnx_opset_problem(exporter: str, opset: int, opset_flag: str = "--onnx-opset") -> Optional[str]:
    """The opsets each exporter writes as asked (ONNX_OPSETS); None when `opset` is one of them."""
    low, high = ONNX_OPSETS[exporter]
    if low <= opset <= high:
        return None
    below = " (asked for less, it can silently write 18); use the torchscript exporter for older opsets"
    return f"the {exporter} exporter writes opsets {low} to {high}, not {opset_flag} {opset}" + (
        below if exporter == "dynamo" and opset < low else "")


def validate(config: "Config", origins: Optional[Mapping[str, str]] = None) -> "Config":
    """Every field against its schema (type, choices, ranges), then the checks that span fields. Returns the config
    with its values in their schema types (e.g. a list as a tuple); raises one UserError listing every problem."""
    origins = origins or {}
    p: list[str] = []
    typed = {}
    for f in fields(Config):
        where = _where(f.name, origins.get(f.name, DEFAULTS))
        try:
            typed[f.name] = coerce(f.name, getattr(config, f.name))
        except ValueError as exc:
            p.append(f"{where} {exc}")
            continue
        if problem := _range_problem(typed[f.name], f.metadata, where):
            p.append(problem)
    if p:
        raise UserError("Invalid configuration: " + "; ".join(p) + ". Fix the value(s) and run again.")
    c = dataclasses.replace(config, **typed)
    _check(not (c.resume and c.auto_resume), "--resume and --auto-resume cannot be used together", p)
    _check(not (c.warmup_iters and c.lr_schedule == "onecycle"),
           "--warmup-iters does not combine with --lr-schedule onecycle (one-cycle warms up by itself)", p)
    _check(c.max_memory is None or parse_size(c.max_memory) is not None,
           f"--max-memory must be a size such as 2G, 500M or 1000000 (bytes), got {c.max_memory!r}", p)
    _check(c.dataset != "imagefolder" or bool(c.data_dir),
           "--dataset imagefolder needs --data-dir DIR (a folder with train/CLASS/*.png and test/CLASS/*.png)", p)
    _check(not c.pretrained or c.model not in MODELS,
           f"--pretrained needs a torchvision model (e.g. --model resnet18); {c.model} has no pretrained weights", p)
    _check(
        len(c.kernels) == 2 and all(k >= 1 for k in c.kernels),
        f"--kernels needs two positive channel counts (e.g. 16 32), got {list(c.kernels)}",
        p,
    )
    _check(not c.checkpoint_every or c.checkpoint_every % c.accumulation_steps == 0,
           f"--checkpoint-every {c.checkpoint_every} is not a multiple of --accumulation-steps {c.accumulation_steps}: "
           "a checkpoint in the middle of an accumulation would lose the gradients gathered so far, and a resume from it "
           "would differ from the uninterrupted run; make it a multiple", p)
    if c.onnx and (problem := onnx_opset_problem(c.onnx_exporter, c.onnx_opset)):
        p.append(problem + ", or pass --no-onnx")
    if p:
        raise UserError("Invalid configuration: " + "; ".join(p) + ". Fix the value(s) and run again.")
    return c
