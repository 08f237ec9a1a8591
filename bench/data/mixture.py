"""One mixture and how it is composed: a target, interferers and noise at exact levels.

:mod:`bench.data.mix` draws training mixtures and the evaluation sets of the enrollment
conditions from these pieces, :mod:`bench.data.streams` the long streams of the stream
conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.audio import SR
from bench.data.conditions import EPS, fit_length, power, reverberate, scale_to_ratio

PEAK = 0.95


@dataclass
class Mixture:
    """One mixture with its references.

    Attributes:
        mixture: ``[T]`` float32, what the enhancer hears.
        target: ``[T]`` float32, the target exactly as present in ``mixture`` (reference).
        enrollment: ``[Te]`` float32, the enrollment the embedding is computed from
            (degraded according to the condition).
        enrollment_clean: ``[Te]`` float32, the same enrollment crop, clean.
        speaker: target speaker id.
        meta: ``sir_db``, ``snr_db``, ``noise_type``, ``condition``, ``target_utt``,
            ``enroll_utt``, ``interferers``, ``room``, ``rt60_s``, ... (JSON-serialisable).
        interference: ``[T]`` float32, the interfering speakers' part of ``mixture``.
        noise: ``[T]`` float32, the noise part (``mixture == target + interference + noise``).
    """

    mixture: np.ndarray
    target: np.ndarray
    enrollment: np.ndarray
    enrollment_clean: np.ndarray
    speaker: str
    meta: dict[str, Any] = field(default_factory=dict)
    interference: np.ndarray | None = None
    noise: np.ndarray | None = None


def enrollment_crop(x: np.ndarray, enroll_s: float) -> np.ndarray:
    """Deterministic enrollment: first ``enroll_s`` seconds, looped when shorter. ``[Te]``."""
    return fit_length(x, int(round(enroll_s * SR)))


# what a mixture holds besides the target (``MixConfig.shares`` gives their shares)
NOISE_ONLY, INTERFERER_ONLY, BOTH = 0, 1, 2


def draw_kind(mix_cfg: Any, rng: np.random.Generator) -> int:
    """Which of :data:`NOISE_ONLY`, :data:`INTERFERER_ONLY`, :data:`BOTH` a mixture holds, drawn by
    ``mix_cfg.shares``; without shares every mixture is :data:`BOTH` and ``rng`` is not touched, so
    the draws of every mixture made before shares existed are unchanged."""
    if not mix_cfg.shares:
        return BOTH
    return int(rng.choice(3, p=np.asarray(mix_cfg.shares, dtype=np.float64) / sum(mix_cfg.shares)))


def compose(target: np.ndarray, interferers: list[np.ndarray], noise: np.ndarray | None,
            sir_db: float, snr_db: float, rirs: list[np.ndarray] | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mix dry signals at exact SIR / SNR (measured against the possibly reverberant target).

    Args:
        target: dry target ``[T]``.
        interferers: dry interferers, each ``[T]`` (may be empty).
        noise: noise ``[T]`` or None.
        sir_db: target-to-(sum of interferers) ratio in dB.
        snr_db: target-to-noise ratio in dB.
        rirs: None, or one RIR per source (target first, then interferers).

    Returns:
        ``(mixture, target, interference, noise)``, each float32 ``[T]``.
    """
    n = len(target)
    t = np.asarray(target, dtype=np.float64)
    if rirs is not None:
        t = reverberate(t, rirs[0]).astype(np.float64)
    inter = np.zeros(n, dtype=np.float64)
    for k, x in enumerate(interferers):
        x = np.asarray(x, dtype=np.float64)
        if rirs is not None:
            x = reverberate(x, rirs[k + 1]).astype(np.float64)
        inter += x / np.sqrt(power(x) + EPS)  # equal power per interferer
    inter = scale_to_ratio(t, inter, sir_db) if interferers else inter
    nz = scale_to_ratio(t, noise, snr_db) if noise is not None else np.zeros(n)
    mix = t + inter + nz
    g = min(1.0, PEAK / (np.abs(mix).max() + EPS))
    f32 = [np.asarray(a * g, dtype=np.float32) for a in (t, inter, nz)]
    return (f32[0] + f32[1] + f32[2]).astype(np.float32), f32[0], f32[1], f32[2]


__all__ = ["BOTH", "INTERFERER_ONLY", "NOISE_ONLY", "PEAK", "Mixture", "compose", "draw_kind", "enrollment_crop"]
