"""Command line -> Config. Every Config field is a flag in both spellings (`--batch-size`, `--batch_size`),
`--key=value` works (what a W&B sweep agent passes), and `--config FILE.yaml` supplies values that flags override.

argparse only collects the text of the flags that were given; converting and checking it is the schema's job
(`config.resolve`), the same for flags, files, presets and checkpoints. Keep imports light: `--help` must not
import torch, torchvision or wandb.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from typing import Any, Mapping, NoReturn, Optional, Sequence

from ignite_app.config import FIELDS, Config, check_value, default_of, flag_of, kind_of, load_yaml, resolve
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
    "distributed": "several processes (torchrun, srun, or --nproc-per-node)",
    "extensions": "extensions",
}


class ShortUsageParser(argparse.ArgumentParser):
    """argparse that reports a mistake as a UserError (exit 2, one paragraph) after the one-line usage, instead of
    printing its whole usage block (30 lines for train.py) before the error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UserError(message)


class _PrintAndExitAction(argparse.Action):
    """A flag that prints a listing and exits (`--list-handlers`, `--list-models`); `describe` is `module:function`,
    imported only when the flag is given, so `--help` stays light."""

    def __init__(self, option_strings, dest, describe: str, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.describe = describe

    def __call__(self, parser, namespace, values, option_string=None):
        import importlib

        module, _, function = self.describe.partition(":")
        print(getattr(importlib.import_module(module), function)())
        parser.exit(0)


class _HandlerArgAction(argparse.Action):
    """`--handler-arg key=value` adds a keyword argument to the most recent `--handler`."""

    def __call__(self, parser, namespace, values, option_string=None):
        specs = list(getattr(namespace, "handler", None) or [])
        if not specs:
            parser.error("--handler-arg must follow a --handler")
        specs[-1] = f"{specs[-1]} {shlex.quote(values)}"  # a value may hold spaces
        setattr(namespace, "handler", specs)


def _help(f) -> str:
    default = default_of(f)
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{f.metadata['help']} (default: {shown})" if shown not in (None, "", ()) else f.metadata["help"]


def build_parser() -> argparse.ArgumentParser:
    """Flags for every Config field; only the ones given land in the namespace (defaults come from the schema)."""
    parser = ShortUsageParser(
        prog="train.py", usage="%(prog)s [options]  (all options: %(prog)s --help)",
        description="Train an image classifier with PyTorch-Ignite and log it to Weights & Biases.",
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="read option values from a YAML file; flags override them")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(Config):
        group_key = f.metadata["group"]
        if group_key not in groups:
            groups[group_key] = parser.add_argument_group(_GROUP_TITLES.get(group_key, group_key))
        group = groups[group_key]
        names = [flag_of(f.name)] + ([f"--{f.name}"] if "_" in f.name else [])
        kwargs: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=_help(f))
        if "choices" in f.metadata:
            kwargs["metavar"] = "{" + ",".join(map(str, f.metadata["choices"])) + "}"
        kind = kind_of(f)
        if f.metadata.get("repeat"):
            kwargs.update(action="append", metavar="SPEC")
        elif kind is tuple:
            kwargs.update(nargs="+", metavar=f.name.upper().rstrip("S"))
        elif kind is bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
            group.add_argument(*names, **kwargs)
            group.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_const", const="false",
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        group.add_argument(*names, **kwargs)
        if f.name == "model":
            group.add_argument("--list-models", "--list_models", action=_PrintAndExitAction,
                               describe="ignite_app.models:describe_models",
                               help="list the networks --model accepts, then exit")
        if f.name == "handler":
            group.add_argument("--handler-arg", "--handler_arg", action=_HandlerArgAction, metavar="KEY=VALUE", default=argparse.SUPPRESS,
                               help="a keyword argument for the preceding --handler (repeatable)")
            group.add_argument("--list-handlers", "--list_handlers", action=_PrintAndExitAction,
                               describe="ignite_app.plugins:describe_handlers",
                               help="list the built-in and installed handlers, then exit")
    return parser


# a resumed run's own command line decides these: how to resume, which user handlers to attach, how it is launched
NOT_INHERITED = ("resume", "auto_resume", "wait_for_lock", "handler", "nproc_per_node", "backend")


def parse(argv: Optional[Sequence[str]] = None, base: Optional[Mapping[str, Any]] = None) -> Config:
    """Parse a command line into a validated Config. Precedence: defaults < --preset < `base` (a checkpoint's
    config when resuming) < the --config file < flags."""
    ns = vars(build_parser().parse_args(argv))
    path = ns.pop("config", None)
    return resolve(flags=ns, file=(path, load_yaml(path)) if path else None, base=base, not_inherited=NOT_INHERITED)


def add_schema_option(parser: argparse.ArgumentParser, name: str, flag: Optional[str] = None, **kwargs: Any) -> None:
    """An option of a companion script (predict.py, export_onnx.py) that is a Config field under the hood: same
    default, and the same type, choices and range once `check_schema_options` has run."""
    f = FIELDS[name]
    flag = flag or flag_of(name)
    names = [flag] + ([flag.replace("-", "_").replace("__", "--", 1)] if "-" in flag[2:] else [])
    kwargs.setdefault("default", default_of(f))
    text = kwargs.get("help", f.metadata["help"])
    kwargs["help"] = text if kwargs["default"] in (None, "", ()) else f"{text} (default: {kwargs['default']})"
    if "choices" in f.metadata:
        kwargs.setdefault("metavar", "{" + ",".join(map(str, f.metadata["choices"])) + "}")
    kwargs.setdefault("metavar", flag[2:].upper().replace("-", "_"))
    parser.add_argument(*names, dest=name, **kwargs)
    parser.set_defaults(**{f"_flag_{name}": flag})


def check_schema_options(args: argparse.Namespace) -> argparse.Namespace:
    """Convert and check every option added with `add_schema_option` through the Config schema (UserError)."""
    for key in [k for k in vars(args) if k.startswith("_flag_")]:
        name = key[len("_flag_"):]
        if getattr(args, name) is not None:  # None: the option's own "not given" (e.g. predict.py --dataset)
            setattr(args, name, check_value(name, getattr(args, name), getattr(args, key)))
        delattr(args, key)
    return args
