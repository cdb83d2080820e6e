"""ignite-app: train image classifiers with PyTorch-Ignite, log to W&B, checkpoint, resume and export ONNX.

The heavy parts (torch, ignite, wandb) load on first use, so `import ignite_app` and `--help` stay fast.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["App", "Config", "UserError", "attach_handlers", "build", "parse", "training"]


def __getattr__(name: str) -> Any:
    if name in ("App", "attach_handlers", "build", "training"):
        from ignite_app import app

        return getattr(app, name)
    if name == "Config":
        from ignite_app.config import Config

        return Config
    if name == "parse":
        from ignite_app.cli import parse

        return parse
    if name == "UserError":
        from ignite_app.errors import UserError

        return UserError
    raise AttributeError(f"module 'ignite_app' has no attribute {name!r}")
