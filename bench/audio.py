"""Audio I/O at the suite's one sample rate (16 kHz, mono, float32)."""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np

SR = 16_000


def resample(x: np.ndarray, sr_in: int, sr_out: int = SR) -> np.ndarray:
    """Polyphase resampling (scipy), float32 out."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly

    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(np.asarray(x, dtype=np.float64), sr_out // g, sr_in // g).astype(np.float32)


def load(path: str | Path, sr: int = SR) -> np.ndarray:
    """Read any soundfile-readable file as mono float32 at ``sr``."""
    import soundfile as sf

    data, native = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(data.mean(axis=1), native, sr)


def save(path: str | Path, x: np.ndarray, sr: int = SR) -> None:
    """Write 16-bit PCM WAV atomically."""
    import soundfile as sf

    from bench.cache import atomic_path

    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(np.asarray(x, dtype=np.float32), -1, 1), sr, format="WAV", subtype="PCM_16")
