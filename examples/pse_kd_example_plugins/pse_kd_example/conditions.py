"""A user enrollment condition, added by this one file: ``clipped``.

The enrollment reaches the suite through a saturating input stage: it is driven 12-24 dB hot and
hard-clipped at full scale, then brought back to its original level. Registering it is one
decorator; ``eval.conditions: [clean, clipped]`` then scores it like a built-in condition.
"""

from __future__ import annotations

import numpy as np

from bench.data.condition_spec import enrollment_condition


@enrollment_condition("clipped", changes="the enrollment driven 12-24 dB hot and hard-clipped (a saturating input)")
def clipped(enrollment: np.ndarray, rng: np.random.Generator, ctx) -> tuple[np.ndarray, dict]:
    gain_db = float(rng.uniform(12.0, 24.0))
    peak = float(np.abs(enrollment).max()) or 1.0
    x = np.clip(enrollment / peak * 10 ** (gain_db / 20), -1.0, 1.0)
    rms_in = float(np.sqrt(np.mean(enrollment**2))) or 1.0
    rms_out = float(np.sqrt(np.mean(x**2))) or 1.0
    return x * (rms_in / rms_out), {"clip_gain_db": gain_db}
