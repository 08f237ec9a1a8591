"""What a refiner is, and the update every updating refiner shares.

A refiner is a registered class (``@register("refiner", name)``, factory ``(cfg, student,
teacher)``) whose class attributes say what it is, so that nothing outside :mod:`bench.refine`
needs to know refiner names:

* ``role``: ``baseline`` (the static embedding every gain is measured against), ``system`` (a
  refiner under test), ``control`` (matched to each system: same rate, rule, block and gate;
  separates speaker information from mere movement), ``ceiling`` (matched to each system: the best
  any re-embedding refiner with those settings could do), ``reference`` (a fixed embedding that
  no deployed system has, once per grid);
* ``uses_student`` / ``uses_teacher`` (which encoder the factory needs), ``updates_embedding``;
* ``start``: which embedding the stream starts from: ``enrollment`` (the teacher embedding of the
  possibly degraded enrollment), ``clean_target`` (of the whole clean test target) or
  ``clean_enrollment`` (of the clean version of the enrollment);
* ``needs_target``: :meth:`update` is given the clean target's block plus context (references
  only); ``needs_mean_embedding``: :meth:`bind` is given the mean training embedding;
* :meth:`label`: the leaderboard's ``system`` name of a cell.

Update rules (``refine.rule``), for the embedding ``e_k`` after ``k`` updates and the block's
encoding ``s_k`` (L2-normalised):

* ``ema``: ``e_k = normalize((1 - a) e_{k-1} + a s_k)`` with ``a = refine.alpha``;
* ``anchored``: the same with ``a_k = 1 / (k + refine.n0)``: a running mean of the blocks in which
  the enrollment counts as ``n0`` blocks;
* ``reliability``: ``a_k = refine.alpha * w_k`` with ``w_k = clip((cos(s_k, e_0) - lo) / (hi -
  lo), 0, 1)``, ``lo, hi = refine.rel_lo, refine.rel_hi``: blocks whose encoding disagrees with the
  enrollment (another voice leaking through, say) move the embedding less. Deployable: it uses
  only the enrollment embedding and the enhanced output.

For every rule ``refine.alpha = 0`` switches refinement off: the embedding is returned as it
is (bit-identical to ``static``) and nothing is encoded. Gates (``refine.gate``) skip an item's
update: ``energy`` when the enhanced block's RMS (dB full scale) is below ``gate_threshold``,
``agreement`` when ``cos(s_k, e_{k-1}) < gate_threshold``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.audio import SR
from bench.config import REFINE_GATES as GATES
from bench.config import REFINE_RULES as RULES
from bench.config import RefineConfig

ROLES = ("baseline", "system", "control", "ceiling", "reference")
STARTS = ("enrollment", "clean_target", "clean_enrollment")


class Refiner:
    """Strategy that updates the embedding ``e [B, D]`` from the last enhanced block.

    Attributes:
        cfg: the :class:`RefineConfig` it was built from.
        context_s: seconds of past audio the refiner wants with each block.
        extra_macs_per_s: MACs per second of audio the refiner adds to the backbone (set by
            :meth:`count_extra_macs`; 0 for refiners that never encode).
        stateful: the encoder carries state across blocks (a streaming student), so it must see
            every block, even one the gate skips.
        last_skipped: ``[B]`` bool of the items the gate skipped at the last update.
        k: updates done in the current stream.
    """

    name: ClassVar[str] = "base"
    role: ClassVar[str] = "system"
    uses_student: ClassVar[bool] = False
    uses_teacher: ClassVar[bool] = False
    updates_embedding: ClassVar[bool] = False
    start: ClassVar[str] = "enrollment"
    needs_target: ClassVar[bool] = False
    needs_mean_embedding: ClassVar[bool] = False

    def __init__(self, cfg: RefineConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else RefineConfig(name=self.name)
        self.context_s = float(getattr(self.cfg, "context_s", 0.0) or 0.0)
        self.extra_macs_per_s: float = 0.0
        self.last_skipped: torch.Tensor | None = None
        self.k = 0
        self.stateful = False

    @classmethod
    def label(cls, cfg: Any) -> str:
        """Leaderboard system name of an experiment config using this refiner."""
        return cls.name

    def bind(self, mean_embedding: torch.Tensor | None = None) -> None:
        """Receive resources the pipeline provides (only those the class asks for)."""

    def reset(self) -> None:
        """Forget per-stream state (called at the start of every stream)."""
        self.last_skipped = None
        self.k = 0

    def update(self, e: torch.Tensor, enhanced_block: torch.Tensor, history: torch.Tensor | None = None,
               target: torch.Tensor | None = None) -> torch.Tensor:
        """Return the next embedding ``[B, D]``.

        Args:
            e: current embedding ``[B, D]``.
            enhanced_block: the block just enhanced ``[B, Tb]``.
            history: up to ``context_s`` seconds of enhanced audio before the block, or None.
            target: the clean target's block plus the same context ``[B, Th + Tb]`` (given to
                refiners with ``needs_target`` only).
        """
        raise NotImplementedError

    def encoder(self) -> nn.Module | Any | None:
        """The module/callable that encodes a window (None when nothing is encoded)."""
        return None

    def count_extra_macs(self, block_len: int, sr: int = SR) -> float:
        """Count and set :attr:`extra_macs_per_s` for blocks of ``block_len`` samples."""
        enc = self.encoder()
        if enc is None or not self.updates_embedding or float(getattr(self.cfg, "alpha", 0.0)) == 0.0:
            self.extra_macs_per_s = 0.0
        else:
            ctx = int(round(self.context_s * sr))
            self.extra_macs_per_s = encoder_macs_per_s(enc, block_len, ctx, sr)
        return self.extra_macs_per_s


class FixedRefiner(Refiner):
    """Never changes the embedding it starts from (``static`` and the fixed references)."""

    def update(self, e: torch.Tensor, enhanced_block: torch.Tensor, history: torch.Tensor | None = None,
               target: torch.Tensor | None = None) -> torch.Tensor:
        self.last_skipped = torch.zeros(e.shape[0], dtype=torch.bool, device=e.device)
        return e


class UpdatingRefiner(Refiner):
    """The shared update (rule + gate, see the module docstring); subclasses define :meth:`encode`."""

    updates_embedding = True

    def __init__(self, cfg: RefineConfig | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        self.alpha = float(c.alpha)
        self.gate = str(c.gate or "none")
        self.gate_threshold = float(c.gate_threshold)
        self.rule = str(getattr(c, "rule", "ema") or "ema")
        self.n0 = float(getattr(c, "n0", 4.0))
        self.rel_lo = float(getattr(c, "rel_lo", 0.3))
        self.rel_hi = float(getattr(c, "rel_hi", 0.8))
        if self.gate not in GATES:
            raise ValueError(f"refine.gate={self.gate!r}; choices: {', '.join(GATES)}")
        if self.rule not in RULES:
            raise ValueError(f"refine.rule={self.rule!r}; choices: {', '.join(RULES)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"refine.alpha={self.alpha!r} is out of range [0, 1]")
        if self.rule == "reliability" and not self.rel_hi > self.rel_lo:
            raise ValueError(f"refine.rel_hi={self.rel_hi!r} must be above refine.rel_lo={self.rel_lo!r}")
        self._e0: torch.Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self._e0 = None

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        """``[B, Tw] -> [B, D]`` raw embedding of the window."""
        raise NotImplementedError

    def source(self, enhanced_window: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The audio that is encoded: the enhanced block plus context (references override)."""
        return enhanced_window

    def rate(self, s: torch.Tensor) -> torch.Tensor:
        """Per-item update rate ``[B, 1]`` of the current update (``self.k`` already counts it)."""
        b = s.shape[0]
        if self.rule == "anchored":
            return s.new_full((b, 1), 1.0 / (self.k + self.n0))
        if self.rule == "reliability":
            cos = F.cosine_similarity(s, self._e0, dim=-1)
            w = ((cos - self.rel_lo) / (self.rel_hi - self.rel_lo)).clamp(0.0, 1.0)
            return (self.alpha * w).unsqueeze(-1)
        return s.new_full((b, 1), self.alpha)

    @torch.no_grad()
    def update(self, e: torch.Tensor, enhanced_block: torch.Tensor, history: torch.Tensor | None = None,
               target: torch.Tensor | None = None) -> torch.Tensor:
        skip = torch.zeros(e.shape[0], dtype=torch.bool, device=e.device)
        self.last_skipped = skip
        if self.alpha == 0.0:
            return e  # bit-identical to static; nothing encoded
        if self._e0 is None:
            self._e0 = e
        self.k += 1
        if self.gate == "energy":
            rms = enhanced_block.float().pow(2).mean(dim=-1).sqrt()
            skip = (20.0 * torch.log10(rms + 1e-12) < self.gate_threshold).to(e.device)
            if bool(skip.all()) and not self.stateful:
                self.last_skipped = skip
                return e
        window = enhanced_block
        if history is not None and history.shape[-1] > 0:
            window = torch.cat([history.to(enhanced_block.dtype), enhanced_block], dim=-1)
        s = F.normalize(self.encode(self.source(window, target)).to(device=e.device, dtype=e.dtype), dim=-1)
        if bool(skip.all()):  # a stateful encoder has seen the block; the embedding stays
            self.last_skipped = skip
            return e
        if self.gate == "agreement":
            skip = skip | (F.cosine_similarity(s, e, dim=-1) < self.gate_threshold)
        a = self.rate(s).to(e.dtype)
        new = F.normalize((1.0 - a) * e + a * s, dim=-1)
        self.last_skipped = skip
        return torch.where(skip.unsqueeze(-1), e, new)


def encoder_macs_per_s(encoder: Any, block_len: int, context_len: int = 0, sr: int = SR) -> float:
    """Extra MACs per second of audio of encoding each block once.

    The encoder runs once per block of ``block_len`` samples on a window of
    ``block_len + context_len`` samples (steady state: the full context is available), i.e.
    ``MACs(window) * sr / block_len``, counted with :func:`bench.metrics.complexity.count_macs`
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
