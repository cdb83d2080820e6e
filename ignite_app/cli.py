"""Command line -> Config. Every Config field is a flag in both spellings (`--batch-size`, `--batch_size`),
`--key=value` works (what a W&B sweep agent passes), and `--config FILE.yaml` supplies values that flags override.

Keep imports light: `--help` must not import torch, torchvision or wandb.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, fields
from typing import Any, Callable, Optional, Sequence

from ignite_app.config import PRESETS, Config, load_yaml, validate
from ignite_app.errors import UserError

_GROUP_TITLES = {
    "data": "data",
    "model": "model",
    "optimization": "optimization",
    "extras": "training extras",
    "logging": "logging",
    "wandb": "Weights & Biases",
    "outputs": "outputs, checkpoints and resuming",
    "onnx": "ONNX export",
    "extensions": "extensions",
}

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def split_items(values: Any, item: Callable[[str], Any]) -> tuple:
    """Accept `16 32`, `16,32`, `[16, 32]` (a sweep agent's spelling) or a YAML list."""
    if values is None:
        return ()
    if isinstance(values, (str, int, float)):
        values = [values]
    tokens = [t for v in values for t in re.split(r"[\s,\[\]'\"]+", str(v)) if t]
    try:
        return tuple(item(t) for t in tokens)
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {list(values)!r} as a list of {item.__name__}") from None


def _default(f) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


class _ListHandlersAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from ignite_app.plugins import describe_handlers

        print(describe_handlers())
        parser.exit(0)


class _ListModelsAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from ignite_app.models import describe_models

        print(describe_models())
        parser.exit(0)


class _HandlerArgAction(argparse.Action):
    """`--handler-arg key=value` adds a keyword argument to the most recent `--handler`."""

    def __call__(self, parser, namespace, values, option_string=None):
        specs = list(getattr(namespace, "handler", None) or [])
        if not specs:
            parser.error("--handler-arg must follow a --handler")
        specs[-1] = f"{specs[-1]} {values}"
        setattr(namespace, "handler", specs)


def _coercer(f) -> Callable[[Any], Any]:
    """The function that turns a flag string or a YAML value into the field's type."""
    default = _default(f)
    if f.metadata.get("repeat"):
        return lambda v: tuple(str(x) for x in (v or ()))
    if "item" in f.metadata:
        return lambda v, item=f.metadata["item"]: split_items(v, item)
    if "type" in f.metadata:  # an optional value of that type (None: automatic)
        return lambda v, kind=f.metadata["type"]: None if v is None else kind(v)
    if isinstance(default, bool):
        return parse_bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return lambda v: None if v is None else str(v)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train an image classifier with PyTorch-Ignite and log it to Weights & Biases.",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="read option values from a YAML file; flags override them")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(Config):
        group_key = f.metadata["group"]
        group = groups.setdefault(group_key, parser.add_argument_group(_GROUP_TITLES[group_key]))
        names = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            names.append(f"--{f.name}")
        kwargs: dict[str, Any] = dict(dest=f.name, default=_default(f), help=f.metadata["help"])
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if f.metadata.get("repeat"):
            kwargs.update(action="append", default=list(kwargs["default"]), metavar="SPEC")
        elif "item" in f.metadata:
            kwargs.update(nargs="+", type=str, metavar=f.name.upper().rstrip("S"))
        elif isinstance(kwargs["default"], bool):
            kwargs.update(nargs="?", const=True, type=parse_bool, metavar="BOOL")
            group.add_argument(*names, **kwargs)
            group.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false", help=argparse.SUPPRESS)
            continue
        else:
            kwargs["type"] = _coercer(f)
        group.add_argument(*names, **kwargs)
        if f.name == "model":
            group.add_argument("--list-models", "--list_models", action=_ListModelsAction,
                               help="list the networks --model accepts, then exit")
        if f.name == "handler":
            group.add_argument("--handler-arg", "--handler_arg", action=_HandlerArgAction, metavar="KEY=VALUE",
                               help="a keyword argument for the preceding --handler (repeatable)")
            group.add_argument("--list-handlers", "--list_handlers", action=_ListHandlersAction,
                               help="list the built-in and installed handlers, then exit")
    return parser


def config_from_namespace(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> Config:
    values = {}
    for f in fields(Config):
        try:
            values[f.name] = _coercer(f)(getattr(ns, f.name))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            parser.error(f"option {f.name}: {exc}")
    return Config(**values)


# a resumed run's own command line decides these: how to resume, and which user handlers to attach
NOT_INHERITED = ("resume", "auto_resume", "handler")


def parse(argv: Optional[Sequence[str]] = None, base: Optional[dict[str, Any]] = None) -> Config:
    """Parse a command line and validate the result. Precedence: defaults < --preset < `base` (a checkpoint's
    config when resuming) < the --config file < flags."""
    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    file_values = load_yaml(pre.config) if pre.config else {}
    preset = pre.preset or file_values.get("preset") or (base or {}).get("preset")
    if preset in PRESETS:
        parser.set_defaults(**PRESETS[preset])
    if base:
        parser.set_defaults(**{k: v for k, v in base.items() if k in Config.__dataclass_fields__ and k not in NOT_INHERITED})
    if file_values:
        parser.set_defaults(**file_values)
    ns = parser.parse_args(argv)
    return validate(config_from_namespace(ns, parser))
