"""What makes decoded audio unusable, and the errors that say so: the part of corpus validation
that :mod:`bench.data.corpus` needs when it first decodes an utterance (so the corpus does not
import the validator, which imports the corpus)."""

from __future__ import annotations

import numpy as np

SILENCE_DBFS = -70.0


class CorpusError(ValueError):
    """The corpus cannot be used as it is; the message lists every problem found."""


class BadAudio(CorpusError):
    """An utterance whose audio decoded but cannot be used (:func:`samples_problem`), raised when
    it is first read; ``why`` is the problem, ``samples`` the decoded audio."""

    def __init__(self, message: str, why: str, samples: np.ndarray) -> None:
        super().__init__(message)
        self.why, self.samples = why, samples


def samples_problem(x: np.ndarray) -> str:
    """``"non-finite ..."`` or ``"silent ..."`` for decoded audio that no mixture can use (the
    very tests of the decode mode), else ``""``; an empty array is the header's business."""
    if x.size == 0:
        return ""
    if not np.isfinite(x).all():
        return "non-finite samples (NaN or inf)"
    xd = np.asarray(x, dtype=np.float64)
    if 20 * np.log10(np.sqrt(np.mean(xd**2)) + 1e-12) < SILENCE_DBFS:
        return f"silent (RMS < {SILENCE_DBFS:.0f} dBFS)"
    return ""


__all__ = ["SILENCE_DBFS", "BadAudio", "CorpusError", "samples_problem"]
