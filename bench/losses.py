"""Distillation losses on L2-normalised embeddings (registry kind ``loss``).

Each plugin is a factory ``f(cfg: DistillConfig) -> loss(s[B,D], t[B,D], speakers[B] | None)``
returning a scalar tensor. ``s`` are student outputs and ``t`` teacher targets; both are
L2-normalised inside the loss. A factory declares, in its ``options`` attribute, the
``distill`` fields it reads (:func:`loss_options`); every other loss option is reset to its
default in the student's cache key (:func:`distill_slice`), so a loss x tau grid trains one MSE
student, not one per tau.

- ``mse``: ``mean_i ||s_i - t_i||^2``
- ``cosine``: ``mean_i (1 - cos(s_i, t_i))``
- ``contrastive`` (InfoNCE): logits ``l_ij = cos(s_i, t_j) / tau``; cross-entropy towards the
  diagonal (student -> teacher). ``symmetric`` averages it with the teacher -> student direction
  (columns of the same matrix). ``positives: speaker`` makes every ``j`` with the same speaker as
  ``i`` a positive: ``-log(sum_{j in P(i)} exp(l_ij) / sum_j exp(l_ij))`` averaged over ``i``.
  ``coord_weight`` adds ``w * mse(s, t)``, a coordinate term that pins the student to the
  teacher's coordinates, which InfoNCE alone does not (it is blind to any direction all teacher
  embeddings share). ``centre`` (centred InfoNCE) is applied by the distillation, which removes
  the teacher's training mean from the targets before the loss (:func:`centre_targets`) and
  restores it on the student's output before refinement (:mod:`bench.students.heads`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from bench.cache import key_slice
from bench.config import DISTILL_ADDED_FIELDS
from bench.registry import get, register

LossFn = Callable[..., torch.Tensor]

# ``distill`` fields that only some losses read; a factory lists the ones it reads in ``options``.
LOSS_OPTIONS = ("tau", "symmetric", "positives", "centre", "coord_weight")


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1, eps=1e-8)


def mse_loss(s: torch.Tensor, t: torch.Tensor, speakers: torch.Tensor | None = None) -> torch.Tensor:
    return (_norm(s) - _norm(t)).pow(2).sum(-1).mean()


def cosine_loss(s: torch.Tensor, t: torch.Tensor, speakers: torch.Tensor | None = None) -> torch.Tensor:
    return (1.0 - (_norm(s) * _norm(t)).sum(-1)).mean()


def _multi_positive_ce(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-log(sum_pos exp / sum_all exp)``; ``pos`` is a bool mask."""
    lse_all = torch.logsumexp(logits, dim=1)
    lse_pos = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)
    return (lse_all - lse_pos).mean()


def info_nce(
    s: torch.Tensor,
    t: torch.Tensor,
    speakers: torch.Tensor | None = None,
    tau: float = 0.1,
    symmetric: bool = True,
    positives: str = "instance",
) -> torch.Tensor:
    """InfoNCE between student and teacher embeddings (see module docstring)."""
    logits = _norm(s) @ _norm(t).T / tau
    n = logits.shape[0]
    if positives == "speaker":
        if speakers is None:
            raise ValueError("positives='speaker' needs the batch's speaker labels (speakers=None given)")
        spk = torch.as_tensor(speakers, device=logits.device).reshape(-1)
        pos = spk[:, None] == spk[None, :]
    elif positives == "instance":
        pos = torch.eye(n, dtype=torch.bool, device=logits.device)
    else:
        raise ValueError(f"positives={positives!r} is not allowed; choices: instance, speaker")
    loss = _multi_positive_ce(logits, pos)
    if symmetric:
        loss = 0.5 * (loss + _multi_positive_ce(logits.T, pos.T))
    return loss


def centre_targets(t: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Teacher targets with the teacher's training mean removed (centred InfoNCE): ``t - mean``.

    Adding one vector ``c`` to every teacher embedding moves their mean by ``c`` too, so the
    centred targets, and any loss on them, do not change."""
    return t.float() - mean.to(t.device, torch.float32)


@register("loss", "mse")
def make_mse(cfg: Any) -> LossFn:
    return mse_loss


make_mse.options = ()  # type: ignore[attr-defined]


@register("loss", "cosine")
def make_cosine(cfg: Any) -> LossFn:
    return cosine_loss


make_cosine.options = ()  # type: ignore[attr-defined]


@register("loss", "contrastive")
def make_contrastive(cfg: Any) -> LossFn:
    tau = float(cfg.tau)
    symmetric = bool(cfg.symmetric)
    positives = str(cfg.positives)
    coord = float(getattr(cfg, "coord_weight", 0.0))

    def loss(s: torch.Tensor, t: torch.Tensor, speakers: torch.Tensor | None = None) -> torch.Tensor:
        out = info_nce(s, t, speakers, tau=tau, symmetric=symmetric, positives=positives)
        return out + coord * mse_loss(s, t) if coord else out

    return loss


make_contrastive.options = LOSS_OPTIONS  # type: ignore[attr-defined]


def loss_options(loss: str) -> tuple[str, ...]:
    """The ``distill`` loss options (of :data:`LOSS_OPTIONS`) the loss ``loss`` reads; a plugin
    factory without an ``options`` attribute is taken to read them all."""
    return tuple(getattr(get("loss", loss), "options", LOSS_OPTIONS))


def canonical_distill(dc: Any) -> Any:
    """``dc`` with every loss option its loss does not read reset to its default."""
    used = set(loss_options(dc.loss))
    reset = {f.name: (f.default if not callable(f.default_factory) else f.default_factory())  # type: ignore[misc]
             for f in fields(dc) if f.name in LOSS_OPTIONS and f.name not in used}
    return replace(dc, **reset)


def distill_slice(dc: Any) -> dict[str, Any]:
    """The distillation settings in a student's cache key: :func:`canonical_distill`, without the
    fields added later that are at their defaults (so keys made before them hold), and without
    ``source`` (how the student is had, not what it is)."""
    return key_slice(canonical_distill(dc), DISTILL_ADDED_FIELDS, skip=("source",))


def variant_label(dc: Any) -> str:
    """The distill settings that make a student of ``dc.loss`` another system, for its label:
    ``-centred``, ``+coord<w>``, ``+<align>`` ("" at the defaults, so labels of older results hold)."""
    c = canonical_distill(dc)
    out = "-centred" if getattr(c, "centre", False) else ""
    if getattr(c, "coord_weight", 0.0):
        out += f"+coord{c.coord_weight:g}"
    if getattr(c, "align", "none") != "none":
        out += f"+{c.align}"
    return out
