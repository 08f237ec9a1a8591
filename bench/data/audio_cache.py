"""Decoded audio under a byte budget, and exact partial reads of audio files.

:class:`AudioCache` keeps decoded waveforms (``numpy`` arrays) up to a budget of bytes and evicts
the least recently used first; an array larger than the whole budget is returned to its caller
but not kept. A corpus holds one per process (each DataLoader worker has its own copy).

:func:`read_frames` reads ``n`` samples from ``start`` without decoding the rest of the file. It
is used only where it gives the very samples a whole read would (:func:`exact_partial`): files
at the suite's rate in an uncompressed or lossless format (WAV / AIFF / FLAC ... with PCM or float
samples), which libsndfile seeks sample-exactly. Lossy formats (Ogg Vorbis, MP3, ADPCM) and files
at another rate are read whole (a resampled file's samples depend on its neighbours).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path

import numpy as np

from bench.audio import SR

DEFAULT_AUDIO_CACHE_MB = 512.0  # the default embedded corpus (447 MiB decoded + noise) fits
MB = 1 << 20

# libsndfile seeks these sample-exactly: the decoded samples of a partial read are those of a
# whole read (lossless, no decoder state carried between blocks)
EXACT_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC"})
EXACT_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})


def budget_bytes(mb: float | None) -> int | None:
    """Bytes of a budget given in MiB (None: unbounded)."""
    return None if mb is None else max(0, int(float(mb) * MB))


class AudioCache:
    """Least-recently-used store of read-only arrays, at most ``budget`` bytes (None: no bound).

    Attributes:
        budget: the bound in bytes, or None.
        nbytes: bytes held now.
        peak: the most bytes held at any time.
        hits, misses, evictions: counts since creation.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self.nbytes = 0
        self.peak = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __getstate__(self) -> dict:
        # a spawned worker gets the budget, not the parent's arrays (it decodes what it needs)
        return {**self.__dict__, "_items": OrderedDict(), "nbytes": 0}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> np.ndarray | None:
        """The array under ``key`` (now the most recently used), or None."""
        x = self._items.get(key)
        if x is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return x

    def put(self, key: Hashable, x: np.ndarray) -> None:
        """Keep ``x`` under ``key``, evicting the least recently used until the budget holds."""
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        if self.budget is not None and x.nbytes > self.budget:
            return
        self._items[key] = x
        self.nbytes += x.nbytes
        self._shrink()
        self.peak = max(self.peak, self.nbytes)

    def set_budget(self, budget: int | None) -> None:
        """Change the bound (evicting at once when it shrinks)."""
        self.budget = budget
        self._shrink()

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0

    def _shrink(self) -> None:
        while self.budget is not None and self.nbytes > self.budget and self._items:
            _, x = self._items.popitem(last=False)
            self.nbytes -= x.nbytes
            self.evictions += 1

    def stats(self) -> dict[str, int | None]:
        """``budget``, ``nbytes``, ``peak``, ``items``, ``hits``, ``misses``, ``evictions``."""
        return {"budget": self.budget, "nbytes": self.nbytes, "peak": self.peak, "items": len(self._items),
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


def exact_partial(path: str | Path) -> int | None:
    """Frames of ``path`` when a partial read of it gives exactly a whole read's samples (at the
    suite's rate, exact format; see the module docstring), else None (also when it cannot be read)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError):
        return None
    if info.samplerate != SR or info.format not in EXACT_FORMATS or info.subtype not in EXACT_SUBTYPES:
        return None
    return int(info.frames)


def read_frames(path: str | Path, start: int, n: int) -> np.ndarray:
    """Samples ``[start, start + n)`` of ``path`` as mono float32 (channels averaged, as
    :func:`bench.audio.load` does); fewer when the file ends first."""
    import soundfile as sf

    data, _ = sf.read(str(path), start=int(start), frames=int(n), dtype="float32", always_2d=True)
    return data.mean(axis=1)
