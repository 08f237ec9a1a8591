"""Streaming enhancement with on-the-fly refinement between blocks."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.audio import SR
from bench.refine.base import Refiner


# --------------------------------------------------------------------------- streaming
@dataclass
class StreamResult:
    """Output of :func:`enhance_streaming`.

    ``enhanced [B, T]``; ``embeddings [K+1, B, D]`` (``e_0 .. e_K``: the embedding used for each
    of the ``K+1`` blocks; None without an embedding); ``n_updates``: refiner calls (``K``, one
    after every block but the last); ``n_skipped``: (block, item) pairs the gate skipped, so the
    skipped fraction is ``n_skipped / (n_updates * B)``; ``skipped [K, B]`` bool; ``block_len``:
    the block length actually used, in samples.
    """

    enhanced: torch.Tensor
    embeddings: torch.Tensor | None
    n_updates: int
    n_skipped: int
    skipped: torch.Tensor | None = None
    block_len: int = 0


def block_samples(block_s: float, hop: int, sr: int = SR) -> int:
    """``block_s`` seconds rounded to the nearest multiple of ``hop`` samples (at least one hop)."""
    hop = int(hop)
    return max(1, int(round(block_s * sr / hop))) * hop


def _init_state(model: Any, batch: int, device: torch.device) -> Any:
    try:
        params = inspect.signature(model.init_state).parameters.values()
        takes_device = len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):
        takes_device = True
    return model.init_state(batch, device) if takes_device else model.init_state(batch)


@torch.no_grad()
def enhance_streaming(
    model: Any,
    mixture: torch.Tensor,
    e0: torch.Tensor | None,
    refiner: Refiner | None,
    block_s: float,
    sr: int = SR,
    target: torch.Tensor | None = None,
) -> StreamResult:
    """Enhance ``mixture [B, T]`` block by block with ``model.step``, refining the embedding.

    * Block length: ``block_s`` rounded to the nearest multiple of ``model.hop`` (at least one
      hop; see :func:`block_samples`). The mixture is zero-padded at the end to a multiple of
      ``hop`` (the last block may be shorter than the others) and the output trimmed back to
      ``T``; a causal model's output on the real samples does not see the padding.
    * After every block but the last, ``e = refiner.update(e, enhanced_block, history)`` where
      ``history`` is up to ``refiner.context_s`` seconds of enhanced audio preceding the block
      (None when ``context_s == 0``). The model state is carried across blocks.
    * ``e0 = None`` (non-personalized) or ``refiner = None`` disables refinement.
    * ``target [B, T]`` (the clean target) is needed by refiners with ``needs_target``: they get
      ``target[:, start - context : stop]`` after block ``[start, stop)``, never anything later.
    * The model is put in eval mode for the call and restored afterwards. Inputs are moved to the
      model's device (``.to(device)`` only), so the same code runs on CPU and CUDA.
    """
    if mixture.dim() != 2:
        raise ValueError(f"mixture must be [B, T], got shape {tuple(mixture.shape)}")
    device = torch.device("cpu")
    for p in model.parameters() if isinstance(model, nn.Module) else ():
        device = p.device
        break
    mixture = mixture.to(device)
    batch, total = mixture.shape
    hop = int(getattr(model, "hop", 1))
    n_block = block_samples(block_s, hop, sr)
    padded = int(math.ceil(total / hop)) * hop if total else 0
    if padded > total:
        mixture = F.pad(mixture, (0, padded - total))
    e = e0.to(device) if e0 is not None else None
    use_refiner = refiner is not None and e is not None
    if refiner is not None:
        refiner.reset()
    ctx = int(round(refiner.context_s * sr)) if use_refiner else 0
    tgt = None
    if use_refiner and refiner.needs_target:
        if target is None or target.shape[0] != batch:
            raise ValueError(f"refiner {refiner.name!r} needs the clean target [B, T] (got "
                             f"{None if target is None else tuple(target.shape)})")
        tgt = F.pad(target.to(device), (0, max(0, padded - target.shape[1])))

    was_training = bool(getattr(model, "training", False))
    if isinstance(model, nn.Module):
        model.eval()
    try:
        state = _init_state(model, batch, device)
        out = mixture.new_zeros(batch, padded)
        starts = list(range(0, padded, n_block))
        trajectory: list[torch.Tensor] = []
        skipped: list[torch.Tensor] = []
        for k, start in enumerate(starts):
            stop = min(start + n_block, padded)
            if e is not None:
                trajectory.append(e)
            y, state = model.step(mixture[:, start:stop], e, state)
            out[:, start:stop] = y
            if use_refiner and k < len(starts) - 1:
                history = out[:, max(0, start - ctx) : start] if ctx > 0 else None
                if refiner.needs_target:
                    e = refiner.update(e, out[:, start:stop], history, target=tgt[:, max(0, start - ctx) : stop])
                else:
                    e = refiner.update(e, out[:, start:stop], history)
                flags = refiner.last_skipped
                if flags is None:
                    flags = torch.zeros(batch, dtype=torch.bool, device=device)
                skipped.append(flags.to(device))
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)

    embeddings = torch.stack(trajectory) if trajectory else None
    skip_t = torch.stack(skipped) if skipped else None
    return StreamResult(
        enhanced=out[:, :total],
        embeddings=embeddings,
        n_updates=len(skipped),
        n_skipped=int(skip_t.sum()) if skip_t is not None else 0,
        skipped=skip_t,
        block_len=n_block,
    )
