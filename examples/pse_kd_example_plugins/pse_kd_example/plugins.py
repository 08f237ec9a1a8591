"""Two plugins registered from outside the suite's package.

* ``pse: maskgru``: a causal time-domain masking backbone. Non-overlapping 1 ms frames are encoded
  by a linear filterbank, a GRU conditioned on the speaker embedding (FiLM) predicts a mask per
  frame, and a linear decoder maps the masked frames back to samples. Frames do not overlap, so
  streaming in blocks gives exactly the offline output and the latency is 0.
* ``student: meanmel``: a speaker encoder that maps the mean and standard deviation of log-mel
  frames to the teacher's embedding size (a few thousand parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.pse.base import PSEModel
from bench.registry import register

FRAME = 16


class MaskGRU(PSEModel):
    hop = FRAME
    latency_samples = 0

    def __init__(self, emb_dim: int, personalized: bool = True, channels: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.personalized = personalized
        self.emb_dim = emb_dim if personalized else 0
        self.enc = nn.Linear(FRAME, channels, bias=False)
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.film = nn.Linear(self.emb_dim, 2 * channels) if personalized else None
        self.mask = nn.Linear(hidden, channels)
        self.dec = nn.Linear(channels, FRAME, bias=False)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> dict:
        return {"h": torch.zeros(1, batch_size, self.gru.hidden_size, device=device)}

    def _run(self, x: torch.Tensor, emb: torch.Tensor | None, state: dict) -> tuple[torch.Tensor, dict]:
        b, t = x.shape
        frames = self.enc(x.reshape(b, t // FRAME, FRAME))  # [B, N, C]
        h = frames
        if self.film is not None:
            e = emb if emb is not None else frames.new_zeros(b, self.emb_dim)
            gamma, beta = self.film(e.to(frames.dtype)).unsqueeze(1).chunk(2, dim=-1)
            h = frames * (1 + gamma) + beta
        y, hn = self.gru(h, state["h"])
        out = self.dec(frames * torch.sigmoid(self.mask(y)))
        return out.reshape(b, t), {"h": hn}

    def forward(self, mixture: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, t = mixture.shape
        pad = (-t) % FRAME
        x = F.pad(mixture, (0, pad)) if pad else mixture
        out, _ = self._run(x, emb, self.init_state(b, mixture.device))
        return out[:, :t]

    def step(self, block: torch.Tensor, emb: torch.Tensor | None, state: dict) -> tuple[torch.Tensor, dict]:
        return self._run(block, emb, state)


@register("pse", "maskgru")
def make_maskgru(cfg, emb_dim: int) -> MaskGRU:
    """Factory ``(PSEConfig, emb_dim) -> MaskGRU``; ``pse.size`` is not used by this backbone."""
    return MaskGRU(emb_dim, personalized=cfg.personalized)


class MeanMel(nn.Module):
    def __init__(self, dim: int, n_mels: int = 40, sr: int = 16_000) -> None:
        super().__init__()
        self.n_fft, self.hop = 400, 160
        n_freq = self.n_fft // 2 + 1
        mel = torch.linspace(0.0, 2595.0 * torch.log10(torch.tensor(1.0 + (sr / 2) / 700.0)).item(), n_mels + 1)
        edges = (700.0 * (10 ** (mel / 2595.0) - 1.0) / (sr / 2) * (n_freq - 1)).round().long()
        fb = torch.zeros(n_mels, n_freq)
        for m in range(n_mels):  # rectangular mel bands, at least one bin each
            lo, hi = int(edges[m]), max(int(edges[m + 1]), int(edges[m]) + 1)
            fb[m, lo:hi] = 1.0 / (hi - lo)
        self.register_buffer("fb", fb, persistent=False)
        self.proj = nn.Sequential(nn.Linear(2 * n_mels, 128), nn.ReLU(), nn.Linear(128, dim))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        win = torch.hann_window(self.n_fft, device=wav.device)
        spec = torch.stft(wav, self.n_fft, self.hop, window=win, return_complex=True).abs().pow(2)  # [B, F, T]
        mel = torch.log1p(torch.einsum("mf,bft->bmt", self.fb, spec))
        return self.proj(torch.cat([mel.mean(-1), mel.std(-1)], dim=-1))


@register("student", "meanmel")
def make_meanmel(cfg, dim: int) -> MeanMel:
    """Factory ``(StudentConfig, dim) -> MeanMel``."""
    return MeanMel(dim)
