"""Tiny synthetic corpora for the data tests (numpy signals, no TTS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.audio import SR, save
from bench.data.corpus import Corpus, Utterance, assign_splits, write_manifest


def voice(f0: float, seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    """A voice-like harmonic signal with a syllable-rate envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    vib = 1 + 0.02 * np.sin(2 * np.pi * 5 * t)
    x = sum(np.sin(2 * np.pi * f0 * k * vib * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, 6))
    x = 0.1 * x * env + 0.003 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def make_corpus(root: Path, n_speakers: int = 8, n_utts: int = 3, seconds: float = 2.0,
                derived: bool = True, seed: int = 0, noise: bool = True) -> Corpus:
    """Write a tiny corpus (16 kHz WAVs + manifest) and return it."""
    root = Path(root)
    utts = []
    for s in range(n_speakers):
        spk = f"spk{s:02d}"
        for k in range(n_utts):
            uid = f"{spk}_{k}"
            save(root / "audio" / f"{uid}.wav", voice(90 + 23 * s, seconds + 0.25 * k, 100 * s + k))
            utts.append(Utterance(uid, f"audio/{uid}.wav", spk, "synthetic", "tts", "CC0", SR,
                                  seconds + 0.25 * k))
        if derived and s % 3 == 0:
            d = f"{spk}__s1.10"
            for k in range(n_utts):
                uid = f"{d}_{k}"
                save(root / "audio" / f"{uid}.wav", voice(99 + 23 * s, seconds, 7 + 100 * s + k))
                utts.append(Utterance(uid, f"audio/{uid}.wav", d, "synthetic+speed", "derived",
                                      "CC0", SR, seconds, parent_speaker=spk))
    if noise:
        rng = np.random.default_rng(seed)
        save(root / "noise" / "hum.wav", (0.05 * np.sin(2 * np.pi * 50 * np.arange(SR * 3) / SR)
                                           + 0.01 * rng.standard_normal(SR * 3)).astype(np.float32))
    assign_splits(utts, 0.25, 0.25, seed)
    write_manifest(root / "manifest.csv", utts)
    return Corpus(root, root / "manifest.csv")
