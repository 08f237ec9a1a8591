"""DNSMOS P.835 (SIG, BAK, OVRL), its P.808 MOS, and personalized DNSMOS (pDNSMOS) of a waveform.

Non-intrusive: each score needs only the signal. The ONNX models and the polynomial fits are the
DNS challenge's, as the ``speechmos`` package (0.0.1.1, MIT) ships and runs them
(``speechmos.dnsmos.run``); this module follows that code step for step, so its values are the
package's (``tests/metrics/metrics/test_dnsmos.py`` checks that), and differs only in how it runs:

* one ONNX Runtime session per model and process, created on first use with one intra-op and one
  inter-op thread (the suite runs one metric worker per core), and rebuilt in a forked child;
* the P.808 model (the same for both) runs once when DNSMOS and pDNSMOS are both wanted;
* a waveform that cannot be scored gives NaN instead of an exception.

Conventions (the challenge's ``dnsmos_local.py``, kept by ``speechmos``): 16 kHz only; a clip
shorter than ``INPUT_LENGTH`` = 9.01 s is concatenated with itself until it is at least that long
(a 4 s clip becomes 16 s); windows of 9.01 s start every second, ``floor(len / sr - 9.01) + 1`` of
them, a window shorter than 9.01 s (the float bounds of window 7 onward lose a sample) is skipped;
P.835 takes the raw window, P.808 the log-mel spectrogram (120 bands, 321-point FFT, hop 160,
``power_to_db(ref=max)``) of the window without its last 160 samples; each window's raw P.835
outputs go through the model's polynomial fit (pDNSMOS has its own), and a clip's score is the mean
over its windows.

NaN (all of a model's columns) when the input is empty, not 1-D, holds non-finite values, is all
zeros (the P.808 features are normalised by the spectrogram's maximum), the rate is not 16 kHz,
or the runtime fails. Samples outside [-1, 1], which ``speechmos`` refuses, are clipped to it, as
a 16-bit file of the output would hold them.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = [
    "COLUMNS",
    "DNSMOS_COLUMNS",
    "INPUT_LENGTH",
    "PDNSMOS_COLUMNS",
    "SR",
    "dnsmos",
    "pdnsmos",
    "scores",
    "windows",
]

SR = 16_000
INPUT_LENGTH = 9.01  # seconds per window
DNSMOS_COLUMNS: tuple[str, ...] = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
PDNSMOS_COLUMNS: tuple[str, ...] = ("pdnsmos_sig", "pdnsmos_bak", "pdnsmos_ovrl")
COLUMNS: tuple[str, ...] = DNSMOS_COLUMNS + PDNSMOS_COLUMNS

# model files inside the speechmos package
_FILES = {
    "p835": ("dnsmos_models", "sig_bak_ovr.onnx"),
    "p808": ("dnsmos_models", "model_v8.onnx"),
    "p835_personalized": ("pdnsmos_models", "sig_bak_ovr.onnx"),
}
# polynomial fits of the raw (SIG, BAK, OVRL) outputs, highest power first (speechmos.dnsmos)
_FITS: dict[bool, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    False: ((-0.08397278, 1.22083953, 0.0052439),
            (-0.13166888, 1.60915514, -0.39604546),
            (-0.06766283, 1.11546468, 0.04602535)),
    True: ((-0.01019296, 0.02751166, 1.19576786, -0.24348726),
           (-0.04976499, 0.44276479, -0.1644611, 0.96883132),
           (-0.00533021, 0.005101, 1.18058466, -0.11236046)),
}

_sessions: dict[str, Any] = {}
_sessions_pid: int | None = None


def _session(model: str) -> Any:
    """The ONNX Runtime session of ``model`` (one per process; a forked child builds its own)."""
    global _sessions_pid
    if _sessions_pid != os.getpid():
        _sessions.clear()
        _sessions_pid = os.getpid()
    sess = _sessions.get(model)
    if sess is None:
        from importlib.resources import files

        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        path = files("speechmos").joinpath(*_FILES[model])
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        _sessions[model] = sess
    return sess


def windows(audio: np.ndarray, sr: int = SR) -> list[np.ndarray]:
    """The 9.01 s float32 windows a clip is scored on (the challenge's repetition and hops)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    len_samples = int(INPUT_LENGTH * sr)
    while len(x) < len_samples:
        x = np.append(x, x)
    num_hops = int(np.floor(len(x) / sr) - INPUT_LENGTH) + 1
    out = []
    for idx in range(num_hops):
        seg = x[int(idx * sr): int((idx + INPUT_LENGTH) * sr)]
        if len(seg) >= len_samples:
            out.append(seg)
    return out


def _melspec(seg: np.ndarray, sr: int) -> np.ndarray:
    """The P.808 model's input: log-mel spectrogram of a window, frames x 120 bands."""
    import librosa

    mel = librosa.feature.melspectrogram(y=seg, sr=sr, n_fft=321, hop_length=160, n_mels=120)
    return ((librosa.power_to_db(mel, ref=np.max) + 40) / 40).T


def _clean(audio: Any, sr: int) -> np.ndarray | None:
    """The clip as float32 in [-1, 1], or None when it cannot be scored."""
    x = np.asarray(audio)
    if sr != SR or x.ndim != 1 or x.size == 0 or not np.issubdtype(x.dtype, np.number):
        return None
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)) or not np.any(x):
        return None
    return np.clip(x, -1.0, 1.0)


def _fit(raw: np.ndarray, personalized: bool) -> tuple[float, float, float]:
    """Mean over windows of the fitted (SIG, BAK, OVRL); ``raw`` is windows x 3 (float32)."""
    fits = _FITS[personalized]
    per_window = [[np.polyval(np.asarray(c), np.float64(v)) for c, v in zip(fits, row, strict=True)]
                  for row in raw]
    sig, bak, ovr = (float(np.mean([w[i] for w in per_window])) for i in range(3))
    return sig, bak, ovr


def scores(audio: Any, sr: int = SR, dnsmos: bool = True, pdnsmos: bool = True) -> dict[str, float]:
    """DNSMOS (``dnsmos_sig/bak/ovrl/p808``) and/or pDNSMOS (``pdnsmos_sig/bak/ovrl``) of one
    clip, NaN where it cannot be computed (see the module docstring)."""
    cols = (DNSMOS_COLUMNS if dnsmos else ()) + (PDNSMOS_COLUMNS if pdnsmos else ())
    out = dict.fromkeys(cols, float("nan"))
    x = _clean(audio, sr)
    if x is None or not cols:
        return out
    try:
        segs = windows(x, sr)
        if dnsmos:
            p835 = _session("p835")
            p808 = _session("p808")
            raw, mos808 = [], []
            for seg in segs:
                feats = _melspec(seg[:-160], sr).astype(np.float32)[np.newaxis]
                mos808.append(p808.run(None, {"input_1": feats})[0][0][0])
                raw.append(p835.run(None, {"input_1": seg[np.newaxis]})[0][0])
            sig, bak, ovr = _fit(np.asarray(raw), personalized=False)
            out.update(dnsmos_sig=sig, dnsmos_bak=bak, dnsmos_ovrl=ovr,
                       dnsmos_p808=float(np.mean(np.asarray(mos808, dtype=np.float32))))
        if pdnsmos:
            sess = _session("p835_personalized")
            raw = [sess.run(None, {"input_1": seg[np.newaxis]})[0][0] for seg in segs]
            sig, bak, ovr = _fit(np.asarray(raw), personalized=True)
            out.update(pdnsmos_sig=sig, pdnsmos_bak=bak, pdnsmos_ovrl=ovr)
    except Exception:  # noqa: BLE001 - any runtime failure is a NaN by contract
        return dict.fromkeys(cols, float("nan"))
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}


def dnsmos(audio: Any, sr: int = SR) -> dict[str, float]:
    """DNSMOS P.835 SIG, BAK, OVRL and the P.808 MOS of one 16 kHz clip (NaN on failure)."""
    return scores(audio, sr, dnsmos=True, pdnsmos=False)


def pdnsmos(audio: Any, sr: int = SR) -> dict[str, float]:
    """Personalized DNSMOS P.835 SIG, BAK, OVRL of one 16 kHz clip (NaN on failure)."""
    return scores(audio, sr, dnsmos=False, pdnsmos=True)
