"""Output maps that bring a student's vectors into the teacher's space, and the student wrapped with one.

A student distilled with a loss that does not fix the teacher's coordinates (InfoNCE is blind to
any direction all teacher embeddings share; centred InfoNCE learns the centred space) needs a map
before its vectors can be mixed into a teacher embedding. Every map here is affine on the
L2-normalised student output, ``m(s) = normalize(s) @ W + b``, fitted once after distillation and
stored with the student (``distill.align`` and ``distill.centre``):

- :func:`restore_map`: centred InfoNCE's inverse, ``b = mean``, ``W = r I`` with ``r`` the mean
  norm of the centred teacher targets (a centred target is ``t - mean``);
- :func:`fit_affine`: least squares (ridge ``1e-4``) from student outputs to teacher targets;
- :func:`fit_orthogonal`: orthogonal Procrustes with a scale, between the centred clouds: a
  rotation, one scale and an offset (keeps the student's geometry, as InfoNCE preserves it).

:class:`MappedStudent` applies a map to any student (window and streaming inference alike).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

RIDGE = 1e-4


class OutputMap(nn.Module):
    """``m(s) = normalize(s) @ weight + bias`` (buffers: fitted, not learned by gradient)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.eye(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def set(self, weight: torch.Tensor, bias: torch.Tensor) -> OutputMap:
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        return self

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return F.normalize(s.float(), dim=-1, eps=1e-8) @ self.weight + self.bias


def _check_pairs(s: torch.Tensor, t: torch.Tensor) -> None:
    if s.dim() != 2 or t.dim() != 2 or s.shape[0] != t.shape[0]:
        raise TypeError(f"fitting a map needs s [N, Ds] and t [N, Dt] with the same N; got {tuple(s.shape)} "
                        f"and {tuple(t.shape)}")
    if s.shape[0] < 2:
        raise ValueError(f"fitting a map needs at least 2 pairs, got {s.shape[0]}")


def fit_affine(s: torch.Tensor, t: torch.Tensor, ridge: float = RIDGE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W [Ds, Dt], b [Dt])`` minimising ``||normalize(s) W + b - t||^2 + ridge ||W||^2``."""
    _check_pairs(s, t)
    x = F.normalize(s.double(), dim=-1, eps=1e-8)
    y = t.double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc + ridge * x.shape[0] * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(gram, xc.T @ yc)
    return w.float(), (my - mx @ w).float()


def fit_orthogonal(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W = c R, b)`` with ``R`` orthogonal and ``c`` a scale, minimising
    ``||normalize(s) W + b - t||^2`` (Procrustes on the centred clouds; needs ``Ds == Dt``)."""
    _check_pairs(s, t)
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"an orthogonal map needs equal dimensions; student {s.shape[1]}, teacher {t.shape[1]}")
    x = F.normalize(s.double(), dim=-1, eps=1e-8)
    y = t.double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    u, sig, vh = torch.linalg.svd(xc.T @ yc)
    d = torch.ones_like(sig)
    d[-1] = torch.sign(torch.det(u @ vh))  # a rotation, not a reflection
    r = (u * d) @ vh
    c = (sig * d).sum() / xc.pow(2).sum().clamp_min(1e-12)
    w = c * r
    return w.float(), (my - mx @ w).float()


def restore_map(mean: torch.Tensor, centred_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred InfoNCE's way back: ``W = r I``, ``b = mean``, ``r`` the mean norm of the centred
    targets, so a student output that matches a centred target's direction maps near the target."""
    r = centred_targets.float().norm(dim=-1).mean()
    return r * torch.eye(mean.shape[-1]), mean.float().reshape(-1)


class MappedStudent(nn.Module):
    """A student followed by an :class:`OutputMap`: ``forward(wav) = map(student(wav))``.

    Streams when the inner student streams (:func:`bench.students.streaming.streaming_encoder`).
    ``num_params`` counts the inner student's learnable parameters; ``map_size`` the map's
    fitted numbers (``W`` and ``b``), which gradient descent never touched.
    """

    def __init__(self, student: nn.Module, dim: int) -> None:
        super().__init__()
        self.inner = student
        self.map = OutputMap(dim)
        self.dim = dim
        self.num_params = int(sum(p.numel() for p in student.parameters() if p.requires_grad))
        self._stream: list[Any] = []  # the inner student's streaming encoder, built once (not a submodule)

    @property
    def map_size(self) -> int:
        return int(self.map.weight.numel() + self.map.bias.numel())

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.map(self.inner(wav))

    def init_stream(self, batch: int, device: torch.device | str = "cpu") -> Any:
        from bench.students.streaming import streaming_encoder

        if not self._stream:
            self._stream.append(streaming_encoder(self.inner))
        return self._stream[0].init_state(batch, device)

    def stream_step(self, block: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        emb, state = self._stream[0].step(block, state)
        return self.map(emb), state


__all__ = ["OutputMap", "MappedStudent", "fit_affine", "fit_orthogonal", "restore_map"]
