"""Streaming enhancement with on-the-fly refinement between blocks."""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
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


@dataclass
class _Loop:
    """What the block loop of :func:`enhance_streaming` needs besides the model and refiner."""

    e: torch.Tensor | None
    use_refiner: bool
    ctx: int
    tgt: torch.Tensor | None
    block_times: list[float] | None
    sync: bool


def _run_blocks(model: Any, refiner: Refiner | None, mixture: torch.Tensor, starts: list[int], n_block: int,
                lp: _Loop) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The block loop: enhance, then refine; ``lp.block_times`` gets each block's compute seconds
    (backbone step plus refiner update, CUDA synchronised when ``lp.sync``)."""
    batch, padded = mixture.shape
    state = _init_state(model, batch, mixture.device)
    out = mixture.new_zeros(batch, padded)
    trajectory: list[torch.Tensor] = []
    skipped: list[torch.Tensor] = []
    e = lp.e
    for k, start in enumerate(starts):
        stop = min(start + n_block, padded)
        if e is not None:
            trajectory.append(e)
        t0 = time.perf_counter()
        y, state = model.step(mixture[:, start:stop], e, state)
        out[:, start:stop] = y
        if lp.use_refiner and k < len(starts) - 1:
            history = out[:, max(0, start - lp.ctx) : start] if lp.ctx > 0 else None
            if refiner.needs_target:
                e = refiner.update(e, out[:, start:stop], history, target=lp.tgt[:, max(0, start - lp.ctx) : stop])
            else:
                e = refiner.update(e, out[:, start:stop], history)
            flags = refiner.last_skipped
            if flags is None:
                flags = torch.zeros(batch, dtype=torch.bool, device=mixture.device)
            skipped.append(flags.to(mixture.device))
        if lp.block_times is not None:
            if lp.sync:
                torch.cuda.synchronize(mixture.device)
            lp.block_times.append(time.perf_counter() - t0)
    return out, trajectory, skipped


@torch.no_grad()
def enhance_streaming(
    model: Any,
    mixture: torch.Tensor,
    e0: torch.Tensor | None,
    refiner: Refiner | None,
    block_s: float,
    sr: int = SR,
    target: torch.Tensor | None = None,
    block_times: list[float] | None = None,
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
    * ``block_times``: a list that receives each block's compute time in seconds (the backbone's
      step plus the refiner's update; CUDA synchronised), for :func:`time_streaming`.
    * The model is put in eval mode for the call and restored afterwards. Inputs are moved to the
      model's device (``.to(device)`` only), so the same code runs on CPU and CUDA.
    """
    if mixture.dim() != 2:
        raise ValueError(f"mixture must be [B, T], got shape {tuple(mixture.shape)}")
    device = _device_of(model)
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
    lp = _Loop(e, use_refiner, ctx, tgt, block_times, device.type == "cuda")
    try:
        out, trajectory, skipped = _run_blocks(model, refiner, mixture, list(range(0, padded, n_block)), n_block, lp)
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


def _device_of(model: Any) -> torch.device:
    for p in model.parameters() if isinstance(model, nn.Module) else ():
        return p.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- timing
@dataclass
class StreamTiming:
    """Measured cost of streaming one stream (batch 1), after a warm-up.

    ``rtf``: wall time of the streaming loop over the stream divided by the stream's duration
    (processing time / audio time; < 1 keeps up with real time). ``block_ms``: compute time of each
    block (backbone step + refiner update), in ms; ``block_ms_p50`` / ``block_ms_p95`` its median
    and 95th percentile. ``algo_latency_ms``: the algorithmic latency, block length plus the
    backbone's ``latency_samples`` (the earliest a sample's enhanced output can exist, compute
    excluded). ``audio_s``, ``wall_s``: the timed stream and loop; ``warmup_s``: audio streamed
    (and discarded) before timing; ``threads``: torch intra-op threads while timing.
    """

    rtf: float
    block_ms_p50: float
    block_ms_p95: float
    algo_latency_ms: float
    audio_s: float
    wall_s: float
    warmup_s: float
    threads: int
    block_ms: list[float]

    def as_dict(self) -> dict[str, float]:
        """The scalar fields (the leaderboard's columns)."""
        return {k: float(v) for k, v in vars(self).items() if k != "block_ms"}


def time_streaming(model: Any, mixture: torch.Tensor, e0: torch.Tensor | None, refiner: Refiner | None,
                   block_s: float, target: torch.Tensor | None = None, warmup_s: float = 1.0,
                   sr: int = SR, threads: int | None = 1) -> StreamTiming:
    """Stream ``mixture [1, T]`` (one stream: a real-time device serves one) and time it.

    First ``warmup_s`` seconds of the same stream are streamed and discarded (allocator, thread
    pools, lazy initialisation), then the whole stream is streamed with per-block timing, with
    ``threads`` torch intra-op threads (default 1: one stream on one core; a block's operations
    are too small to gain from more, and on a busy machine waiting threads cost 10-100x; None
    keeps the process' setting).
    """
    if mixture.dim() != 2 or mixture.shape[0] != 1:
        raise ValueError(f"time_streaming streams one mixture [1, T], got shape {tuple(mixture.shape)}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _time_one(model, mixture, e0, refiner, block_s, target, warmup_s, sr)
    finally:
        torch.set_num_threads(before)


def _time_one(model: Any, mixture: torch.Tensor, e0: torch.Tensor | None, refiner: Refiner | None,
              block_s: float, target: torch.Tensor | None, warmup_s: float, sr: int) -> StreamTiming:
    n_warm = min(mixture.shape[1], max(1, int(round(warmup_s * sr))))
    tw = target[:, :n_warm] if target is not None else None
    enhance_streaming(model, mixture[:, :n_warm], e0, refiner, block_s, sr, tw)
    times: list[float] = []
    sync = _device_of(model).type == "cuda"
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = enhance_streaming(model, mixture, e0, refiner, block_s, sr, target, block_times=times)
    if sync:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    audio_s = mixture.shape[1] / sr
    ms = np.asarray(times) * 1e3
    latency = int(getattr(model, "latency_samples", 0))
    return StreamTiming(
        rtf=wall / audio_s if audio_s > 0 else float("nan"),
        block_ms_p50=float(np.percentile(ms, 50)) if ms.size else float("nan"),
        block_ms_p95=float(np.percentile(ms, 95)) if ms.size else float("nan"),
        algo_latency_ms=1e3 * (res.block_len + latency) / sr,
        audio_s=audio_s,
        wall_s=wall,
        warmup_s=n_warm / sr,
        threads=torch.get_num_threads(),
        block_ms=ms.tolist(),
    )
