"""Objects a checkpoint holds besides model/optimizer/trainer: RNG states and the run's identity.

Both follow the state_dict / load_state_dict protocol, so Ignite's Checkpoint saves them and
Checkpoint.load_objects restores them like any other object in `to_save`.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1


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


class RunMeta:
    """The format version, the W&B run id, the resolved config, and which checkpointer wrote the file."""

    def __init__(self, run_id: str, config: dict[str, Any], kind: str = "latest") -> None:
        self.run_id, self.config, self.kind = run_id, config, kind

    def state_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "run_id": self.run_id, "config": dict(self.config), "kind": self.kind}
