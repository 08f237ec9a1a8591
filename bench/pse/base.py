"""The personalized speech-enhancement (PSE) backbone contract.

A :class:`PSEModel` maps a mixture ``[B, T]`` and a speaker embedding ``[B, D]`` (or ``None``)
to an enhanced waveform ``[B, T]`` of the same length, offline (:meth:`PSEModel.forward`) and
in streaming blocks (:meth:`PSEModel.init_state` / :meth:`PSEModel.step`).

Contract (tested in ``tests/pse/test_pdfnet2.py``):

- Concatenating ``step`` outputs over *any* split of a signal into blocks whose lengths are
  multiples of ``hop`` equals ``forward`` on the whole signal (allclose 1e-5) when the embedding
  is constant; the embedding may change between blocks (on-the-fly refinement).
- Causal at ``hop`` granularity: ``enhanced[:, :k*hop]`` depends on ``mixture[:, :k*hop]`` only
  (a block is emitted once it has been received; real-time latency = block + ``latency_samples``).
- The output is *delayed* by ``latency_samples`` (the algorithmic latency of the STFT framing):
  ``enhanced[:, latency:]`` estimates ``target[:, :T - latency]``. Use
  :func:`compensate_latency` before comparing against the target (SI-SDR, PESQ, ...).
- Wrong shapes raise ``TypeError`` (wrong rank / dtype) or ``ValueError`` (wrong size) naming the
  expected shape; a block length that is not a multiple of ``hop`` raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

State = dict[str, Any]


class PSEModel(nn.Module):
    """Abstract PSE backbone.

    Attributes:
        emb_dim: speaker-embedding size ``D`` the model expects (0 when not personalized).
        personalized: whether the model uses the embedding at all.
        hop: streaming granularity in samples; block lengths must be multiples of it.
        latency_samples: algorithmic delay of the output w.r.t. the input, in samples.
        sample_rate: 16000.
    """

    emb_dim: int = 0
    personalized: bool = False
    hop: int = 160
    latency_samples: int = 0
    sample_rate: int = 16_000

    # ------------------------------------------------------------------ abstract API
    def forward(self, mixture: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """Enhance ``mixture [B, T]`` conditioned on ``emb [B, D]`` (or None) -> ``[B, T]``."""
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        """Fresh streaming state for ``batch_size`` parallel streams."""
        raise NotImplementedError

    def step(
        self, block: torch.Tensor, emb: torch.Tensor | None, state: State
    ) -> tuple[torch.Tensor, State]:
        """Enhance one block ``[B, Tb]`` (``Tb % hop == 0``) -> ``(out [B, Tb], new_state)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared checks
    def check_wave(self, x: torch.Tensor, name: str = "mixture") -> None:
        """Raise TypeError/ValueError unless ``x`` is a float tensor ``[B, T]``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape [B, T], got {type(x).__name__}")
        if x.dim() != 2:
            raise TypeError(f"{name} must have shape [B, T] (2-D), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor [B, T], got {x.dtype}")

    def check_emb(self, emb: torch.Tensor | None, batch: int) -> None:
        """Raise unless ``emb`` is None or ``[batch, emb_dim]`` (ignored if not personalized)."""
        if emb is None or not self.personalized:
            return
        if not isinstance(emb, torch.Tensor):
            raise TypeError(f"emb must be a torch.Tensor [B, D] or None, got {type(emb).__name__}")
        if emb.dim() != 2:
            raise TypeError(
                f"emb must have shape [B, D] = [{batch}, {self.emb_dim}], got {tuple(emb.shape)}"
            )
        if emb.shape[0] != batch or emb.shape[1] != self.emb_dim:
            raise ValueError(
                f"emb must have shape [B, D] = [{batch}, {self.emb_dim}], got {tuple(emb.shape)}"
            )

    def check_block(self, block: torch.Tensor) -> None:
        """Raise ValueError naming the size unless ``block.shape[1]`` is a multiple of ``hop``."""
        self.check_wave(block, "block")
        n = block.shape[1]
        if n == 0 or n % self.hop:
            raise ValueError(
                f"block length {n} samples is not a positive multiple of hop={self.hop} "
                f"(e.g. {max(1, round(n / self.hop)) * self.hop})"
            )


def compensate_latency(enhanced: torch.Tensor, latency: int) -> torch.Tensor:
    """Shift ``enhanced [B, T]`` left by ``latency`` samples (zero-padding the end) -> ``[B, T]``.

    After this, ``enhanced`` is time-aligned with the target (its last ``latency`` samples are 0).
    """
    if latency <= 0:
        return enhanced
    pad = enhanced.new_zeros(enhanced.shape[:-1] + (latency,))
    return torch.cat([enhanced[..., latency:], pad], dim=-1)
