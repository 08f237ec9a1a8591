"""Pieces of signals, and of a corpus's utterances without holding whole waveforms.

:func:`fit_length`, :func:`random_crop` and :func:`power` cut and measure arrays. The other
functions ask the corpus for the piece itself (:meth:`bench.data.corpus.Corpus.crop`,
``segment``, ``frames``, ``power``: read from the file alone where that gives the same samples)
and falls back to cutting ``corpus.audio(utt_id)`` for a duck-typed corpus that only has
``audio``. Either way the result is the one cutting the whole waveform gives, sample for sample,
and the random generator is drawn from exactly as :func:`random_crop` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.audio import SR


def power(x: np.ndarray) -> float:
    """Mean power of a signal."""
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2))


def fit_length(x: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Crop ``x[start:start+n]``; loop the signal when it is shorter than ``n``.

    Returns:
        float32 ``[n]``.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return np.zeros(n, dtype=np.float32)
    if len(x) - start >= n:
        return x[start : start + n].copy()
    reps = int(np.ceil((n + start) / len(x))) + 1
    return np.tile(x, reps)[start : start + n].copy()


def random_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample crop (looped when ``x`` is shorter)."""
    start = int(rng.integers(0, len(x) - n + 1)) if len(x) > n else 0
    return fit_length(x, n, start)


def frames_of(corpus: Any, utt_id: str) -> int:
    """``len(corpus.audio(utt_id))``."""
    f = getattr(corpus, "frames", None)
    return int(f(utt_id)) if f is not None else len(corpus.audio(utt_id))


def power_of(corpus: Any, utt_id: str) -> float:
    """``power(corpus.audio(utt_id))`` (:func:`power`)."""
    f = getattr(corpus, "power", None)
    return float(f(utt_id)) if f is not None else power(corpus.audio(utt_id))


def crop_of(corpus: Any, utt_id: str, start: int, n: int) -> np.ndarray:
    """``fit_length(corpus.audio(utt_id), n, start)`` (float32 ``[n]``, looped when short)."""
    f = getattr(corpus, "crop", None)
    return f(utt_id, start, n) if f is not None else fit_length(corpus.audio(utt_id), n, start)


def segment_of(corpus: Any, utt_id: str, start: int, end: int) -> np.ndarray:
    """``crop_audio(corpus.audio(utt_id), start, end)`` (zero-padded to ``end - start``)."""
    f = getattr(corpus, "segment", None)
    if f is not None:
        return f(utt_id, start, end)
    x = corpus.audio(utt_id)
    seg = np.asarray(x[max(start, 0):end], dtype=np.float32)
    return np.pad(seg, (0, end - start - seg.shape[0])) if seg.shape[0] < end - start else seg


def random_crop_of(corpus: Any, utt_id: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``random_crop(corpus.audio(utt_id), n, rng)`` (:func:`random_crop`)."""
    length = frames_of(corpus, utt_id)
    start = int(rng.integers(0, length - n + 1)) if length > n else 0
    return crop_of(corpus, utt_id, start, n)


def random_noise_crop(corpus: Any, index: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``random_crop(corpus.noise(index), n, rng)``."""
    frames, crop = getattr(corpus, "noise_frames", None), getattr(corpus, "noise_crop", None)
    if frames is None or crop is None:
        return random_crop(corpus.noise(index), n, rng)
    length = int(frames(index))
    start = int(rng.integers(0, length - n + 1)) if length > n else 0
    return crop(index, start, n)


def enrollment_of(corpus: Any, utt_id: str, enroll_s: float) -> np.ndarray:
    """``enrollment_crop(corpus.audio(utt_id), enroll_s)`` (:func:`bench.data.mixture.enrollment_crop`:
    the first ``enroll_s`` seconds, looped when shorter)."""
    return crop_of(corpus, utt_id, 0, int(round(enroll_s * SR)))
