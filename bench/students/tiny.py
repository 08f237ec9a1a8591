"""``tiny`` student: log-mel (10 ms) -> 2 causal conv layers (20 ms frames) -> GRU -> attentive pooling -> low-rank linear to D.

Streaming-friendly (causal convolutions, unidirectional GRU). With the default
:class:`~bench.config.StudentConfig` (40 mels, 96 channels, 96 hidden) it has about 124 k
parameters for ``D = 256`` and 141 k for ``D = 512``; the cap ``cfg.max_params`` is enforced
at construction (``ValueError`` naming the count and the cap).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.audio import SR
from bench.registry import register


def mel_filterbank(n_mels: int, n_fft: int, sr: int = SR, fmin: float = 20.0, fmax: float | None = None) -> np.ndarray:
    """HTK-style triangular mel filters, ``[n_mels, n_fft // 2 + 1]``."""
    fmax = fmax or sr / 2

    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel2hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = mel2hz(np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size), dtype=np.float32)
    for i in range(n_mels):
        lo, c, hi = pts[i], pts[i + 1], pts[i + 2]
        up = (freqs - lo) / max(c - lo, 1e-9)
        down = (hi - freqs) / max(hi - c, 1e-9)
        fb[i] = np.maximum(0.0, np.minimum(up, down))
    return fb


class LogMel(nn.Module):
    """Log-mel spectrogram (25 ms / 10 ms at 16 kHz) with per-utterance mean removal."""

    def __init__(self, n_mels: int = 40, n_fft: int = 400, hop: int = 160) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", torch.from_numpy(mel_filterbank(n_mels, n_fft)), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:  # [B,T] -> [B, n_mels, F]
        spec = torch.stft(wav.float(), self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        mel = self.fb @ spec.abs().pow(2)
        logmel = torch.log(mel + 1e-6)
        return logmel - logmel.mean(dim=-1, keepdim=True)


class CausalConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, dilation: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.pad = (k - 1) * dilation
        self.conv = nn.Conv1d(c_in, c_out, k, dilation=dilation, stride=stride)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(F.pad(x, (self.pad, 0)))))


class TinyStudent(nn.Module):
    """Tiny speaker encoder mapping ``wav[B,T]`` (16 kHz) to ``[B, dim]`` (unnormalised)."""

    def __init__(self, dim: int, n_mels: int = 40, channels: int = 96, hidden: int = 96, rank: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.frontend = LogMel(n_mels)
        self.conv1 = CausalConv(n_mels, channels, 5, stride=2)  # 20 ms frames
        self.conv2 = CausalConv(channels, channels, 3, dilation=2)
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.att = nn.Linear(hidden, 1)
        self.rank = rank or min(64, hidden)
        self.down = nn.Linear(hidden, self.rank, bias=False)
        self.up = nn.Linear(self.rank, dim)
        self.num_params = num_params(self)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        x = self.frontend(wav)  # [B, M, F]
        x = self.conv2(self.conv1(x))  # [B, C, F]
        h, _ = self.gru(x.transpose(1, 2))  # [B, F, H]
        w = torch.softmax(self.att(h).squeeze(-1), dim=1)  # [B, F]
        pooled = (w.unsqueeze(-1) * h).sum(1)
        return self.up(self.down(pooled))


def num_params(module: nn.Module) -> int:
    """Learnable parameters of ``module``."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


@register("student", "tiny")
def make_tiny(cfg, dim: int) -> TinyStudent:
    """Build the tiny student for a teacher of dimension ``dim``; enforce ``cfg.max_params``."""
    model = TinyStudent(dim, n_mels=cfg.n_mels, channels=cfg.channels, hidden=cfg.hidden)
    if model.num_params > cfg.max_params:
        raise ValueError(
            f"student 'tiny' has {model.num_params} parameters (dim={dim}, channels={cfg.channels}, "
            f"hidden={cfg.hidden}), over the cap student.max_params={cfg.max_params}"
        )
    return model


__all__ = ["TinyStudent", "LogMel", "mel_filterbank", "make_tiny", "num_params"]
