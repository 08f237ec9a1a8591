"""Distillation losses on L2-normalised embeddings (registry kind ``loss``).

Each plugin is a factory ``f(cfg: DistillConfig) -> loss(s[B,D], t[B,D], speakers[B] | None)``
returning a scalar tensor. ``s`` are student outputs and ``t`` teacher targets; both are
L2-normalised inside the loss.

- ``mse``: ``mean_i ||s_i - t_i||^2``
- ``cosine``: ``mean_i (1 - cos(s_i, t_i))``
- ``contrastive`` (InfoNCE): logits ``l_ij = cos(s_i, t_j) / tau``; cross-entropy towards the
  diagonal (student -> teacher). ``symmetric`` averages it with the teacher -> student direction
  (columns of the same matrix). ``positives: speaker`` makes every ``j`` with the same speaker as
  ``i`` a positive: ``-log(sum_{j in P(i)} exp(l_ij) / sum_j exp(l_ij))`` averaged over ``i``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.registry import register

LossFn = Callable[..., torch.Tensor]


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


@register("loss", "mse")
def make_mse(cfg) -> LossFn:
    return mse_loss


@register("loss", "cosine")
def make_cosine(cfg) -> LossFn:
    return cosine_loss


@register("loss", "contrastive")
def make_contrastive(cfg) -> LossFn:
    tau = float(cfg.tau)
    symmetric = bool(cfg.symmetric)
    positives = str(cfg.positives)

    def loss(s: torch.Tensor, t: torch.Tensor, speakers: torch.Tensor | None = None) -> torch.Tensor:
        return info_nce(s, t, speakers, tau=tau, symmetric=symmetric, positives=positives)

    return loss
