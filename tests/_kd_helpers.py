"""Small duck-typed corpus and teacher for the teacher / student / distillation tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from bench.teachers.base import Teacher

SR = 16_000


def voice(f0: float, formant: float, seconds: float, seed: int) -> np.ndarray:
    """A crude voiced signal: harmonics of ``f0`` shaped around ``formant``, with vibrato."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = f0 * (1 + 0.03 * np.sin(2 * np.pi * (3 + rng.random()) * t))
    phase = 2 * np.pi * np.cumsum(f) / SR
    x = np.zeros_like(t)
    for h in range(1, 12):
        amp = np.exp(-((h * f0 - formant) ** 2) / (2 * 400.0**2)) + 0.05
        x += amp * np.sin(h * phase + rng.random() * 6.28)
    env = 0.6 + 0.4 * np.sin(2 * np.pi * (2 + rng.random()) * t) ** 2
    x = x * env + 0.01 * rng.standard_normal(t.size)
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


class FakeCorpus:
    """Duck-typed Corpus: ``speakers(split)``, ``utts_of(speaker, split)``, ``audio``, ``key``."""

    def __init__(self, n_train: int = 4, n_val: int = 2, n_test: int = 2, n_utts: int = 3, seconds: float = 2.0) -> None:
        self.key = f"fake-{n_train}-{n_val}-{n_test}-{n_utts}-{seconds}"
        self._split: dict[str, str] = {}
        self._utts: dict[str, list[str]] = {}
        self._audio: dict[str, np.ndarray] = {}
        k = 0
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            for _ in range(n):
                spk = f"spk{k:02d}"
                self._split[spk] = split
                f0, formant = 90 + 23 * k, 500 + 170 * k
                self._utts[spk] = []
                for j in range(n_utts):
                    uid = f"{spk}_{j}"
                    self._utts[spk].append(uid)
                    self._audio[uid] = voice(f0, formant, seconds, seed=100 * k + j)
                k += 1

    def speakers(self, split: str | None = None) -> list[str]:
        return sorted(s for s, sp in self._split.items() if split is None or sp == split)

    def utts_of(self, speaker: str, split: str | None = None) -> list[str]:
        return list(self._utts[speaker])

    def audio(self, utt_id: str) -> np.ndarray:
        return self._audio[utt_id]

    def utt(self, utt_id: str) -> SimpleNamespace:
        return SimpleNamespace(utt_id=utt_id, speaker=utt_id.rsplit("_", 1)[0])


class FakeTeacher(Teacher):
    """Cheap deterministic teacher: fixed random projection of log band energies."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__("fake", dim, "local", f"fake{dim}", "test teacher")
        g = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(64, dim, generator=g))
        self.calls = 0

    def _embed(self, wav: torch.Tensor) -> torch.Tensor:
        self.calls += wav.shape[0]
        spec = torch.stft(wav, 512, 256, window=torch.hann_window(512), return_complex=True).abs().pow(2)
        bands = spec[:, :256].reshape(wav.shape[0], 64, 4, -1).sum(2).mean(-1)
        return torch.log(bands + 1e-6) @ self.proj
