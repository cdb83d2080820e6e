"""What a checkpoint holds besides model/optimizer/trainer, and which of it a resumed run loads.

`App.to_save` is the one dict both checkpointers save; `plan_load` derives from it what a resume loads back
(`Checkpoint.load_objects`), which objects start fresh and what the checkpoint holds that this run does not use.
`RNGStates` follows the state_dict / load_state_dict protocol and is restored last, right before training.
`RunMeta` (the run's identity) and the data's `DatasetInfo` are only saved: a resume checks them against the run, it
does not load them (`resume.check_same_data`: the config's dataset and validation split; `app._check_same_classes`:
the data's class names; `resume.check_model_fits` checks the model's weights, their names and shapes).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

# 2: every checkpoint (latest or best) holds both checkpointers' states, "checkpointer" is always the latest one's;
# version 1 files are read too (resume.load_checkpoint renames a version-1 best file's own state)
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
RESTORED_LAST = "rng"  # the RNG states are restored right before training, after everything else
# the settings an object's saved state depends on: when one of them differs from the checkpoint's, the saved state
# does not fit this run and the object starts as it would have been at this iteration (App.restore)
STATE_SETTINGS = {"lr_scheduler": ("lr_schedule", "lr", "warmup_iters", "lr_step_epochs", "lr_gamma", "epochs")}
STATE_FLAGS = {"early_stopping": "--early-stopping", "lr_scheduler": "--lr-schedule/--warmup-iters", "scaler": "--amp",
               "gradients": "--accumulation-steps > 1"}


class RNGStates:
    """Python, NumPy and torch (CPU and CUDA) RNG states, as plain tensors/tuples so `weights_only=True` loads them.

    With several processes each rank draws its own numbers (dropout, augmentation), so the checkpoint keeps every
    rank's state (`{"world_size": N, "ranks": [...]}`, gathered from all ranks) and each rank restores its own.
    """

    def __init__(self) -> None:
        self.saved_world_size = 1  # how many processes wrote the state loaded last

    def state_dict(self) -> dict[str, Any]:
        from ignite_app.distributed import gather_states

        return gather_states(self.local_state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from ignite_app.distributed import own_state

        mine, self.saved_world_size = own_state(state)
        if mine is not None:
            self.load_local_state_dict(mine)

    def local_state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class AccumulatedGradients:
    """The parameters' .grad tensors, checkpointed with --accumulation-steps > 1: a checkpoint between two optimizer
    steps (an epoch of odd length with 2 steps, --checkpoint-every) holds gradients summed over the iterations so
    far, which the next step needs for a bit-exact resume. Ignite's trainer zeroes them at the start of each cycle."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = list(model.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {"grads": [None if p.grad is None else p.grad.detach().clone() for p in self.params]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for param, grad in zip(self.params, state["grads"], strict=True):
            param.grad = None if grad is None else grad.to(param.device, param.dtype)


class RunMeta:
    """The format version, the W&B run id and the resolved config: what a checkpoint is, read by `resume`."""

    def __init__(self, run_id: str, config: dict[str, Any]) -> None:
        self.run_id, self.config = run_id, config

    def state_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "run_id": self.run_id, "config": dict(self.config)}


@dataclass
class LoadPlan:
    """What a resume does with each entry of `to_save` and of the checkpoint."""

    to_load: dict[str, Any]  # loaded by Checkpoint.load_objects (the RNG states come after, see RESTORED_LAST)
    fresh: dict[str, str] = field(default_factory=dict)  # name -> why it starts fresh (not in the checkpoint, or changed)
    unused: list[str] = field(default_factory=list)  # in the checkpoint, but nothing in this run takes it

    def describe(self) -> Optional[str]:
        """One line on what does not carry over, or None when everything does."""
        parts = [f"{name} starts fresh ({why})" for name, why in self.fresh.items()]
        if self.unused:
            parts.append(f"the checkpoint's {', '.join(self.unused)} "
                         f"{'is' if len(self.unused) == 1 else 'are'} not used by this run ("
                         + ", ".join(f"{STATE_FLAGS[n]} is off" if n in STATE_FLAGS else "no object of that name"
                                     for n in self.unused) + ")")
        return "; ".join(parts) if parts else None


def plan_load(to_save: dict[str, Any], content: dict[str, Any], config: dict[str, Any],
              epoch_length_changed: bool = False) -> LoadPlan:
    """The one place where a resume decides what to load: every object of `to_save` with a `load_state_dict` whose
    state the checkpoint holds, unless the settings that state depends on changed (STATE_SETTINGS, or the epoch
    length for a schedule counted in iterations)."""
    saved_config = content.get("meta", {}).get("config", {})
    plan = LoadPlan(to_load={})
    for name, obj in to_save.items():
        if name == RESTORED_LAST or not hasattr(obj, "load_state_dict"):
            continue
        if name not in content:
            flag = STATE_FLAGS.get(name)
            plan.fresh[name] = f"the checkpoint has no state for it{f': {flag} was off' if flag else ''}"
            continue
        changed = [f"{key} {saved_config.get(key)!r} -> {config.get(key)!r}" for key in STATE_SETTINGS.get(name, ())
                   if key in saved_config and saved_config.get(key) != config.get(key)]
        if name in STATE_SETTINGS and epoch_length_changed:
            changed.append("the epoch length")
        if changed:
            plan.fresh[name] = f"changed: {', '.join(changed)}"
            continue
        plan.to_load[name] = obj
    plan.unused = sorted(name for name in content if name not in to_save)
    return plan
