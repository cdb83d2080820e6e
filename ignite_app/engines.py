"""Ignite's supervised trainer and evaluators, with the options a run can ask for: mixed precision (CUDA AMP with a
GradScaler, bf16 autocast on the CPU), gradient accumulation, gradient clipping and torch.compile."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from ignite.engine import Engine, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, Loss
from torch import nn


@dataclass
class Engines:
    trainer: Engine
    evaluator: Engine
    test_evaluator: Engine
    scaler: Optional[torch.amp.GradScaler]
    grad_norm: Optional["GradNormClipper"]


class GradNormClipper:
    """Clips the gradient norm right before every optimizer step (an optimizer step pre-hook, so it composes with
    Ignite's own update functions, gradient accumulation and AMP: GradScaler unscales before calling step) and keeps
    the last total norm for logging. Ignite's supervised step has no clipping option, hence this hook."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = max_norm
        self.last_norm = float("nan")
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.handle = optimizer.register_step_pre_hook(self._clip)

    def _clip(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.last_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_norm))


def _autocast_fn(device: torch.device, amp: bool) -> tuple[Optional[str], Callable, Callable]:
    """(ignite amp_mode, model_fn, model_transform) for the device: CUDA uses Ignite's AMP; the CPU, bf16 autocast."""
    if amp and device.type == "cpu":
        def model_fn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)

        return None, model_fn, lambda output: output.float()
    return ("amp" if amp else None), (lambda model, x: model(x)), (lambda output: output)


def create_engines(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    amp: bool = False,
    accumulation_steps: int = 1,
    clip_grad_norm: float = 0.0,
    compile_model: bool = False,
    wrap: Callable[[nn.Module], nn.Module] = lambda model: model,
    train_loss_fn: Optional[nn.Module] = None,
) -> Engines:
    """The trainer and two evaluators (validation each epoch, test once), all on the same (maybe compiled) model.

    `wrap` gives the trainer its model (DistributedDataParallel with several processes); the evaluators use the bare
    model, whose forward passes need no collective, so ranks may hold different numbers of evaluation batches.
    Their metrics (Ignite's) all-reduce their sums when computed. `train_loss_fn`: the trainer's loss, when it
    differs from the evaluators' `loss_fn` (distributed.ShareWeightedLoss with several processes)."""
    forward_model = torch.compile(model) if compile_model else model
    train_model = wrap(forward_model)
    amp_mode, model_fn, model_transform = _autocast_fn(device, amp)
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
    clipper = GradNormClipper(optimizer, clip_grad_norm) if clip_grad_norm > 0 else None
    trainer = create_supervised_trainer(
        train_model, optimizer, train_loss_fn or loss_fn, device=device, non_blocking=True, amp_mode=amp_mode,
        scaler=scaler if scaler is not None else False, gradient_accumulation_steps=accumulation_steps,
        model_fn=model_fn, model_transform=model_transform,
    )

    def evaluator() -> Engine:
        return create_supervised_evaluator(
            forward_model, metrics={"accuracy": Accuracy(), "loss": Loss(loss_fn)}, device=device, non_blocking=True,
            amp_mode=amp_mode, model_fn=model_fn, model_transform=model_transform,
        )

    return Engines(trainer, evaluator(), evaluator(), scaler, clipper)
