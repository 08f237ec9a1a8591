"""Pieces shared by the suite's training loops: backbone (:mod:`bench.pse.train`), student
(:mod:`bench.distill`) and in-suite teacher (:mod:`bench.teachers._train`) training.

Each loop keeps its own data and objective; they share the learning-rate schedule
(:func:`warmup_cosine`), the validation bookkeeping (best score, best weights, early stopping:
:func:`note_validation`), copies of the best weights, atomic checkpoint writes, RNG state
capture/restore and the progress bar. The optimiser step itself (backward, gradient clipping at
the loop's own ``grad_clip``: ``pse.grad_clip``, ``distill.grad_clip``, ``teacher.train_grad_clip``;
AMP scaler) is :func:`bench.runtime.backward_step`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

FINAL_LR_FRAC = 0.05  # every cosine schedule of the suite ends at this fraction of its peak


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device):
    the one seeding every training loop calls before it builds its model (the loops draw their
    data from their own ``np.random.Generator``, seeded from the same value)."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def warmup_cosine(step: int, total: int, warmup: int, peak: float = 1.0, final_frac: float = FINAL_LR_FRAC) -> float:
    """Learning rate (or, with ``peak=1``, the multiplier of a base rate) at optimiser step ``step``
    (0-based): linear warm-up from ``peak / warmup`` to ``peak`` over ``warmup`` steps, then cosine
    decay to ``final_frac * peak`` at ``total`` (held there after it). A pure function of the step,
    so a resumed run follows the same schedule."""
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    # pi * k / span in this order: the student schedule's arithmetic before the loops shared it,
    # so cached students stay reproducible bit for bit (the backbone's differed in the last bit)
    return peak * (final_frac + (1.0 - final_frac) * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span)))


def note_validation(state: dict[str, Any], score: float, higher_is_better: bool, min_delta: float = 0.0) -> bool:
    """Record a validation ``score`` in the loop ``state`` (keys ``best``, ``best_step``, ``bad``,
    ``step``): True when it beats ``best`` by more than ``min_delta`` (the caller then keeps a copy
    of the weights), else one more ``bad`` validation toward the loop's patience."""
    better = score > state["best"] + min_delta if higher_is_better else score < state["best"] - min_delta
    if better:
        state.update(best=score, best_step=state["step"], bad=0)
    else:
        state["bad"] += 1
    return better


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
