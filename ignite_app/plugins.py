"""User handlers: `--handler SPEC [JSON | key=value ...]`, where SPEC is

  package.module:callable      an importable callable
  path/to/file.py:callable     a callable in a Python file
  NAME                         a handler registered under the `ignite_app.handlers` entry-point group

A function is called as `fn(app, **kwargs)` and attaches what it wants to the app's engines; its keyword
arguments are checked against its signature (names, and int/float/str/bool annotations) before anything is
written. A class is instantiated with the keyword arguments before anything is written, so its constructor can
validate them as Ignite's handlers do, and `instance.attach(app)` is called once the app exists.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import shlex
import inspect
import sys
import typing
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import yaml

from ignite_app.errors import UserError

ENTRY_POINT_GROUP = "ignite_app.handlers"
BUILTIN_HANDLERS = {"hard-examples": "ignite_app.handlers.hard_examples:HardExamplesTable"}


def parse_handler_spec(text: str) -> tuple[str, dict[str, Any]]:
    """'mod:fn {"every": 2}' or "mod:fn every=2 'name=a b'" -> ('mod:fn', {'every': 2, 'name': 'a b'}); values are
    read as YAML (2 an int, true a bool, [a, b] a list)."""
    spec, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    if not rest:
        return spec, {}
    if rest.startswith("{"):
        try:
            kwargs = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise UserError(f"--handler {spec}: its arguments {rest!r} are not valid JSON ({exc}).") from None
        if not isinstance(kwargs, dict):
            raise UserError(f"--handler {spec}: its JSON arguments must be an object, got {rest!r}.")
        return spec, kwargs
    kwargs = {}
    try:
        pairs = shlex.split(rest)  # `--handler-arg 'key=a b'` arrives quoted (cli._HandlerArgAction)
    except ValueError as exc:
        raise UserError(f"--handler {spec}: cannot split its arguments {rest!r} ({exc}); quote values with spaces.") from None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--handler-arg {pair!r} for {spec} must look like key=value (e.g. every=2).")
        kwargs[key] = yaml.safe_load(value)
    return spec, kwargs


def registered_handlers() -> dict[str, str]:
    """name -> 'module:attr': the built-in handlers, then those installed under the entry-point group."""
    return {**BUILTIN_HANDLERS, **{ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}}


def describe_handlers() -> str:
    """The text of `train.py --list-handlers`."""
    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    lines = ["Handlers usable as --handler NAME:"]
    for name, target in sorted(registered_handlers().items()):
        ep = installed.get(name)
        origin = "built-in" if name in BUILTIN_HANDLERS and (ep is None or ep.value == target) else (
            f"installed by {ep.dist.name if ep and ep.dist else 'a package'}")
        lines.append(f"  {name:<20} {target}  ({origin})")
    lines.append("Any package.module:callable or path/to/file.py:callable works too; the callable receives the app.")
    return "\n".join(lines)


def _load_from_file(path: Path, attr: str, spec: str) -> Any:
    if not path.is_file():
        raise UserError(f"--handler {spec}: the file {path} does not exist.")
    name = f"ignite_app_user_handler_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a user's file may fail in any way; report it as bad input
        raise UserError(f"--handler {spec}: importing {path} failed with {type(exc).__name__}: {exc}.") from None
    return _get_attr(module, attr, spec, str(path))


def _get_attr(module: Any, attr: str, spec: str, where: str) -> Any:
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))[:12]
            raise UserError(f"--handler {spec}: {where} has no attribute {attr!r} (it has: {', '.join(public)}).")
        obj = getattr(obj, part)
    return obj


def load_callable(spec: str) -> Callable[..., Any]:
    """Resolve a SPEC to the callable it names; a UserError says what was tried."""
    registered = registered_handlers()
    if ":" not in spec:
        if spec not in registered:
            names = ", ".join(sorted(registered)) or "none installed"
            raise UserError(
                f"--handler {spec}: no handler of that name (registered: {names}). Use package.module:callable, "
                "path/to/file.py:callable, or a name from `train.py --list-handlers`."
            )
        spec = registered[spec]
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        obj = _load_from_file(Path(target), attr, spec)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UserError(
                f"--handler {spec}: cannot import module {target!r} ({exc}). Check the spelling, that it is installed "
                "or on PYTHONPATH, or give a file path instead (path/to/file.py:callable)."
            ) from None
        obj = _get_attr(module, attr, spec, f"module {target}")
    if not callable(obj):
        raise UserError(f"--handler {spec}: {attr!r} is a {type(obj).__name__}, not a callable that takes the app.")
    return obj


def _check_keywords(spec: str, target: Callable[..., Any], kwargs: dict[str, Any], takes_app: bool) -> None:
    """The keyword arguments against the callable's signature: known names, and values of annotated simple types."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have none: nothing to check against
        return
    accepted = [n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = accepted[1:] if takes_app else accepted
    try:
        signature.bind(*([None] if takes_app else []), **kwargs)
    except TypeError as exc:
        call = "fn(app, **kwargs)" if takes_app else "Class(**kwargs)"
        raise UserError(f"--handler {spec}: {exc} (it takes {', '.join(accepted) or 'no keyword arguments'}; a handler "
                        f"is called as {call}).") from None
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: the handler checks its own values
        return
    for key, value in kwargs.items():
        expected = hints.get(key)
        ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool)}.get(expected)
        if ok is not None and not ok(value):
            raise UserError(f"--handler {spec}: {key} must be {expected.__name__}, got {value!r}.")


def prepare_handler(spec: str, target: Callable[..., Any], kwargs: dict[str, Any]) -> Callable[[Any], None]:
    """Check a handler's keyword arguments now, before anything is written; returns what attaches it to the app."""
    if inspect.isclass(target):
        _check_keywords(spec, target, kwargs, takes_app=False)
        try:
            handler = target(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"--handler {spec}: {exc}.") from None
        if not callable(getattr(handler, "attach", None)):
            raise UserError(f"--handler {spec}: the class {target.__name__} has no attach(app) method; a handler class "
                            "is built from the keyword arguments and then attached with attach(app).")
        return handler.attach
    _check_keywords(spec, target, kwargs, takes_app=True)
    return functools.partial(target, **kwargs)


def load_handlers(specs: tuple[str, ...]) -> list[Callable[[Any], None]]:
    """Resolve every --handler and check its arguments up front (before anything is written), as callables that
    take the app."""
    loaded = []
    for text in specs:
        spec, kwargs = parse_handler_spec(text)
        loaded.append(prepare_handler(spec, load_callable(spec), kwargs))
    return loaded
