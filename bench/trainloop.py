"""Pieces shared by the suite's training loops: backbone (:mod:`bench.pse.train`), student
(:mod:`bench.distill`) and in-suite teacher (:mod:`bench.teachers._train`) training.

Each loop keeps its own schedule and data (what they compute is part of the cached results);
what they share is mechanics that computes nothing: copies of the best weights, atomic
checkpoint writes, RNG state capture/restore and the progress bar. The optimiser step itself
(backward, gradient clipping, AMP scaler) is :func:`bench.runtime.backward_step`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s state dict (the best weights so far)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, obj: dict[str, Any]) -> None:
    """``torch.save(obj)`` to ``path`` atomically (a reader never sees a partial checkpoint)."""
    from bench.cache import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The loop's RNG states: its numpy generator's and torch's global CPU generator's."""
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}


def restore_rng(rng: np.random.Generator, np_state: dict[str, Any], torch_state: torch.Tensor) -> None:
    """Inverse of :func:`rng_state`: continue ``rng`` and torch's CPU generator where they were."""
    rng.bit_generator.state = np_state
    torch.set_rng_state(torch_state)


def progress_bar(progress: bool, total: int, desc: str, initial: int = 0) -> Any:
    """A transient tqdm bar over ``total`` steps (from ``initial``), or None without ``progress``."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False)
