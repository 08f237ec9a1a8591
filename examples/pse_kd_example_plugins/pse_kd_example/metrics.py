"""A user metric, added by this one file: ``lsd`` (log-spectral distance, dB; lower is better).

The root-mean-square over frames of the RMS over frequency bins of the difference of the two
log power spectra (512-point STFT, hop 128, Hann window), a common measure of spectral damage.
"""

from __future__ import annotations

import numpy as np

from bench.metrics.spec import metric


@metric("lsd", higher_is_better=False, cost="fast", needs_reference=True)
def lsd(est: np.ndarray, ref: np.ndarray, sr: int) -> float:
    n_fft, hop = 512, 128
    if len(ref) < n_fft:
        return float("nan")
    win = np.hanning(n_fft)
    frames = 1 + (len(ref) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    p_est = np.abs(np.fft.rfft(est[idx] * win, axis=1)) ** 2
    p_ref = np.abs(np.fft.rfft(ref[idx] * win, axis=1)) ** 2
    d = 10 * np.log10(p_ref + 1e-10) - 10 * np.log10(p_est + 1e-10)
    return float(np.mean(np.sqrt(np.mean(d**2, axis=1))))
