"""Learning-rate schedules built from Ignite's param schedulers (stepped every iteration, checkpointed, and visible in
the logged `lr/group_0` curve)."""
from __future__ import annotations

from typing import Optional

import torch
from ignite.handlers.param_scheduler import (
    CosineAnnealingScheduler,
    LRScheduler,
    ParamScheduler,
    PiecewiseLinear,
    create_lr_scheduler_with_warmup,
)

from ignite_app.config import LR_SCHEDULES


def create_lr_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    lr: float,
    total_iterations: int,
    epoch_length: int,
    warmup_iterations: int = 0,
    step_epochs: int = 1,
    gamma: float = 0.1,
) -> Optional[ParamScheduler]:
    """A scheduler to attach on ITERATION_STARTED, or None for a constant lr without warm-up."""
    if name not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {name!r}; choose one of {LR_SCHEDULES}")
    if name == "onecycle":  # its own warm-up is the rising first 30%
        return LRScheduler(torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_iterations + 1))
    after_warmup = max(1, total_iterations - warmup_iterations)
    if name == "cosine":
        base: object = CosineAnnealingScheduler(optimizer, "lr", start_value=lr, end_value=0.0, cycle_size=after_warmup + 1)
    elif name == "step":
        base = LRScheduler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_epochs * epoch_length, gamma=gamma))
    elif warmup_iterations:
        base = PiecewiseLinear(optimizer, "lr", milestones_values=[(0, lr), (after_warmup, lr)])
    else:
        return None
    if warmup_iterations:
        return create_lr_scheduler_with_warmup(base, warmup_start_value=0.0, warmup_end_value=lr,
                                               warmup_duration=warmup_iterations)
    return base  # type: ignore[return-value]
