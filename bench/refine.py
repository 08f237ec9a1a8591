"""On-the-fly refinement of the speaker embedding during streaming enhancement.

After each block ``k`` of the stream, a refiner encodes the *enhanced* audio of that block
(optionally preceded by ``RefineConfig.context_s`` seconds of earlier enhanced audio) into
``s_k`` and updates the embedding::

    e_{k+1} = normalize((1 - alpha) * e_k + alpha * s_k)

Registered refiners (``@register("refiner", name)``; factory ``(cfg, student, teacher)``):

* ``static``: never changes ``e`` (the ``alpha = 0`` baseline); 0 extra MACs.
* ``ema``: ``s_k = normalize(student(window))``; the student is the tiny distilled encoder.
* ``oracle``: the same update with ``s_k = teacher.embed(window)`` (heavy upper bound).

Gates (``cfg.gate``, per batch item; a gated item keeps its ``e`` bit-exactly):

* ``energy``: skip when the enhanced block's RMS in dB (``20 log10(rms + 1e-12)``, full scale
  = 1.0) is below ``cfg.gate_threshold``;
* ``agreement``: skip when ``cos(s_k, e_k) < cfg.gate_threshold``.

``alpha = 0`` returns ``e`` itself without encoding anything, so it is bit-identical to
``static``. :func:`enhance_streaming` runs a :class:`~bench.pse.base.PSEModel` block by block and
applies a refiner between blocks.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import RefineConfig
from bench.registry import register

__all__ = [
    "EMARefiner",
    "OracleRefiner",
    "Refiner",
    "StaticRefiner",
    "StreamResult",
    "block_samples",
    "encoder_macs_per_s",
    "enhance_streaming",
    "make_refiner",
]

SR = 16_000


# --------------------------------------------------------------------------- base
class Refiner:
    """Strategy that updates the embedding ``e [B, D]`` from the last enhanced block.

    Attributes:
        name: registry name.
        cfg: the :class:`RefineConfig` it was built from.
        context_s: seconds of past enhanced audio the refiner wants as ``history``.
        extra_macs_per_s: MACs per second of audio the refiner adds to the backbone. Set by the
            caller, e.g. with :meth:`count_extra_macs` (0 for ``static``).
        last_skipped: ``[B]`` bool of the items the gate skipped at the last update (all False
            without a gate or before any update).
    """

    name: str = "base"

    def __init__(self, cfg: RefineConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else RefineConfig(name=self.name)
        self.context_s = float(getattr(self.cfg, "context_s", 0.0) or 0.0)
        self.extra_macs_per_s: float = 0.0
        self.last_skipped: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget per-stream state (called at the start of every stream)."""
        self.last_skipped = None

    def update(
        self, e: torch.Tensor, enhanced_block: torch.Tensor, history: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the next embedding ``[B, D]`` given the current one and the enhanced block.

        ``history [B, Th]`` is the enhanced audio just before the block (at most
        ``context_s`` seconds; shorter at the start of a stream), or None.
        """
        raise NotImplementedError

    def encoder(self) -> nn.Module | Any | None:
        """The module/callable that encodes a window (None when nothing is encoded)."""
        return None

    def count_extra_macs(self, block_len: int, sr: int = SR) -> float:
        """Count and set :attr:`extra_macs_per_s` for blocks of ``block_len`` samples."""
        enc = self.encoder()
        if enc is None:
            self.extra_macs_per_s = 0.0
        else:
            ctx = int(round(self.context_s * sr))
            self.extra_macs_per_s = encoder_macs_per_s(enc, block_len, ctx, sr)
        return self.extra_macs_per_s


@register("refiner", "static")
class StaticRefiner(Refiner):
    """Keeps the enrollment embedding: ``e_{k+1} = e_k`` (alpha is ignored)."""

    name = "static"

    def __init__(
        self, cfg: RefineConfig | None = None, student: Any = None, teacher: Any = None
    ) -> None:
        super().__init__(cfg)

    def update(
        self, e: torch.Tensor, enhanced_block: torch.Tensor, history: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.last_skipped = torch.zeros(e.shape[0], dtype=torch.bool, device=e.device)
        return e


class _EncoderRefiner(Refiner):
    """Shared EMA update with an encoder; subclasses define :meth:`encode`."""

    def __init__(self, cfg: RefineConfig | None = None) -> None:
        super().__init__(cfg)
        self.alpha = float(self.cfg.alpha)
        self.gate = str(self.cfg.gate or "none")
        self.gate_threshold = float(self.cfg.gate_threshold)
        if self.gate not in ("none", "energy", "agreement"):
            raise ValueError(f"refine.gate={self.gate!r}; choices: none, energy, agreement")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"refine.alpha={self.alpha!r} is out of range [0, 1]")

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        """``[B, Tw] -> [B, D]`` raw embedding of the window."""
        raise NotImplementedError

    @torch.no_grad()
    def update(
        self, e: torch.Tensor, enhanced_block: torch.Tensor, history: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch = e.shape[0]
        skip = torch.zeros(batch, dtype=torch.bool, device=e.device)
        self.last_skipped = skip
        if self.alpha == 0.0:
            return e  # bit-identical to static; nothing encoded
        if self.gate == "energy":
            rms = enhanced_block.float().pow(2).mean(dim=-1).sqrt()
            skip = (20.0 * torch.log10(rms + 1e-12) < self.gate_threshold).to(e.device)
            if bool(skip.all()):
                self.last_skipped = skip
                return e
        window = enhanced_block
        if history is not None and history.shape[-1] > 0:
            window = torch.cat([history.to(enhanced_block.dtype), enhanced_block], dim=-1)
        s = F.normalize(self.encode(window).to(device=e.device, dtype=e.dtype), dim=-1)
        if self.gate == "agreement":
            skip = skip | (F.cosine_similarity(s, e, dim=-1) < self.gate_threshold)
        new = F.normalize((1.0 - self.alpha) * e + self.alpha * s, dim=-1)
        self.last_skipped = skip
        return torch.where(skip.unsqueeze(-1), e, new)


@register("refiner", "ema")
class EMARefiner(_EncoderRefiner):
    """Student refinement: ``s_k = normalize(student(window))``."""

    name = "ema"

    def __init__(
        self, cfg: RefineConfig | None = None, student: nn.Module | None = None, teacher: Any = None
    ) -> None:
        super().__init__(cfg)
        if student is None:
            raise ValueError("refiner 'ema' needs a student encoder (got None)")
        self.student = student
        student.eval()  # inference only: BatchNorm statistics / dropout frozen

    def encoder(self) -> nn.Module:
        return self.student

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        return self.student(window)


@register("refiner", "oracle")
class OracleRefiner(_EncoderRefiner):
    """Teacher-oracle refinement: ``s_k = teacher.embed(window)`` (heavy upper bound)."""

    name = "oracle"

    def __init__(
        self, cfg: RefineConfig | None = None, student: Any = None, teacher: Any = None
    ) -> None:
        super().__init__(cfg)
        if teacher is None:
            raise ValueError("refiner 'oracle' needs a teacher (got None)")
        self.teacher = teacher

    def encoder(self) -> Any:
        return self.teacher.embed

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        return self.teacher.embed(window)


@register("refiner", "oracle_clean")
class CleanOracleRefiner(StaticRefiner):
    """Upper bound, not deployable: the static teacher embedding of the **clean test target**.

    It never updates (like ``static``); the evaluation starts it from ``teacher.embed(target)``
    instead of the enrollment embedding (``embeds_clean_target``). ``oracle_clean`` minus
    ``static`` is the headroom any refiner could recover on a condition.
    """

    name = "oracle_clean"
    embeds_clean_target = True


def make_refiner(cfg: RefineConfig, student: Any = None, teacher: Any = None) -> Refiner:
    """Build the refiner ``cfg.name`` from the registry."""
    from bench import registry

    return registry.get("refiner", cfg.name)(cfg, student, teacher)


# --------------------------------------------------------------------------- complexity
def encoder_macs_per_s(encoder: Any, block_len: int, context_len: int = 0, sr: int = SR) -> float:
    """Extra MACs per second of audio of encoding each block once.

    The encoder runs once per block of ``block_len`` samples on a window of
    ``block_len + context_len`` samples (steady state: the full context is available), i.e.
    ``MACs(window) * sr / block_len``. Counted with :func:`bench.metrics.complexity.count_macs`
    (fvcore + recurrent handles) on a batch of one; any module or callable (``teacher.embed``).
    """
    from bench.metrics.complexity import count_macs

    if block_len <= 0:
        raise ValueError(f"block_len must be positive, got {block_len}")
    device = torch.device("cpu")
    owner = getattr(encoder, "__self__", encoder)
    if isinstance(owner, nn.Module):
        for p in owner.parameters():
            device = p.device
            break
    x = torch.zeros(1, int(block_len + context_len), device=device)
    return count_macs(encoder, (x,)) * float(sr) / float(block_len)


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
