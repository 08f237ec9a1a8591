"""Evaluation conditions: how the enrollment (or, for ``drift``, the test target) is degraded.

Names come from :data:`bench.config.ENROLL_CONDITIONS` (the stream conditions of the paper's
regime are built by :mod:`bench.data.streams`):

- ``clean``: first ``enroll_s`` seconds of a different clean utterance of the target speaker.
- ``short``: a 0.5-2 s clean enrollment.
- ``noisy``: noise added to the enrollment: babble at 0 dB, or white/pink/brown/real samples
  at 0-5 dB SNR.
- ``reverb``: the enrollment convolved with a simulated room (RT60 0.6-0.9 s; see
  :func:`random_rir`).
- ``bandlimited``: telephone channel: band-pass (~100-300 Hz to 3.4-4 kHz), 16 k -> 8 k -> 16 k.
- ``competing``: another speaker's voice over the whole enrollment at a target-to-competitor
  ratio drawn from ``competing_sir_db`` (default -5..5 dB: sometimes the other voice dominates).
- ``drift``: the *test target* drifts: its playback rate (pitch and formants) ramps from 1 to
  0.87-0.92 or 1.08-1.15 over the utterance; the enrollment is clean.
- ``combined``: competing talker (as in ``competing``) + reverb + babble at 5 dB + bandlimited.

All randomness comes from the ``rng`` argument, so a condition is deterministic per seed.
Levels are exact: a component is scaled on the actual signals so that
``10 log10(sum(ref**2) / sum(component**2))`` equals the drawn dB value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.audio import SR, resample
from bench.config import (
    COMPETING_CONDITIONS,
    COMPETING_SIR_DB,
    ENROLL_CONDITIONS,
    STREAM_CONDITIONS,
)
from bench.data.pieces import (  # noqa: F401  (fit_length, power and random_crop: also imported from here)
    fit_length,
    power,
    random_crop,
    random_crop_of,
    random_noise_crop,
)

EPS = 1e-12


# --------------------------------------------------------------------------- helpers
def scale_to_ratio(ref: np.ndarray, other: np.ndarray, db: float) -> np.ndarray:
    """Scale ``other`` so that ``10 log10(P(ref) / P(other)) == db`` exactly.

    Args:
        ref: reference signal ``[T]``.
        other: signal to scale ``[T]`` (non-silent).
        db: wanted ratio in dB (SNR / SIR).

    Returns:
        scaled ``other`` (float64 ``[T]``); zeros when ``other`` is silent.
    """
    po = power(other)
    if po < EPS:
        return np.zeros_like(other, dtype=np.float64)
    g = np.sqrt(power(ref) / (po * 10 ** (db / 10)))
    return np.asarray(other, dtype=np.float64) * g


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) Gaussian noise ``[n]``, unit power."""
    w = rng.standard_normal(n)
    if kind != "white":
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n, 1.0 / SR)
        f[0] = f[1] if n > 1 else 1.0
        expo = {"pink": 0.5, "brown": 1.0}.get(kind)
        if expo is None:
            raise ValueError(f"unknown coloured noise {kind!r}; choices: white, pink, brown")
        w = np.fft.irfft(spec / f**expo, n)
    return (w / np.sqrt(np.mean(w**2) + EPS)).astype(np.float32)


def babble(corpus, speakers: list[str], n: int, rng: np.random.Generator,
           n_talkers: tuple[int, int] = (3, 6)) -> tuple[np.ndarray, list[str]]:
    """Babble: sum of 3-6 equal-power random crops of other speakers' utterances.

    Returns:
        (babble ``[n]`` float32 unit power, the speakers used).
    """
    if not speakers:
        return colored_noise("pink", n, rng), []
    k = int(rng.integers(n_talkers[0], n_talkers[1] + 1))
    chosen = [speakers[i] for i in rng.choice(len(speakers), size=min(k, len(speakers)), replace=False)]
    out = np.zeros(n, dtype=np.float64)
    for s in chosen:
        utts = corpus.utts_of(s)
        u = utts[int(rng.integers(len(utts)))]
        x = random_crop_of(corpus, u.utt_id, n, rng).astype(np.float64)
        out += x / np.sqrt(power(x) + EPS)
    return (out / np.sqrt(power(out) + EPS)).astype(np.float32), chosen


def sample_noise(corpus, kind: str, n: int, rng: np.random.Generator,
                 exclude: set[str] | None = None, split: str | None = None) -> tuple[np.ndarray, dict]:
    """Noise of type ``kind`` (white/pink/brown/babble/samples), ``[n]`` unit power.

    ``samples`` uses the corpus's real noise files (falls back to pink when it has none);
    ``babble`` uses speakers of ``split`` not in ``exclude``.
    """
    info: dict[str, Any] = {"noise_type": kind}
    if kind == "babble":
        pool = [s for s in corpus.speakers(split) if s not in (exclude or set())]
        x, used = babble(corpus, pool, n, rng)
        info["babble_speakers"] = used
        return x, info
    if kind == "samples":
        files = getattr(corpus, "noise_files", [])
        if files:
            i = int(rng.integers(len(files)))
            x = random_noise_crop(corpus, i, n, rng).astype(np.float64)
            info["noise_file"] = files[i].name
            if power(x) > EPS:
                return (x / np.sqrt(power(x))).astype(np.float32), info
        info["noise_type"] = "pink"
        kind = "pink"
    return colored_noise(kind, n, rng), info


def random_rir(rng: np.random.Generator, rt60: float, n_sources: int = 1) -> list[np.ndarray]:
    """Simulated room impulse responses: pyroomacoustics image sources + stochastic tail.

    Early reflections come from pyroomacoustics' image-source model (a random shoebox room,
    absorption from Sabine's formula for ``rt60``, reflection order <= 8); the late
    reverberation is an exponentially decaying Gaussian tail (-60 dB at ``rt60``) drawn from
    ``rng`` and level-matched to the image-source energy 20-50 ms after the direct path.
    (pyroomacoustics' ray tracer is not seedable, this hybrid is deterministic per ``rng``.)

    Args:
        rng: random generator (room size, mic and source positions, tail).
        rt60: wanted reverberation time in seconds.
        n_sources: number of sources in the room (one mic).

    Returns:
        ``n_sources`` RIRs ``[L]`` float32, each normalised so its peak is 1.
    """
    import pyroomacoustics as pra

    dims = rng.uniform([4.0, 3.0, 2.5], [9.0, 7.0, 3.5])
    e_abs, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(float(e_abs)),
                       max_order=int(min(max_order, 8)), air_absorption=False)
    mic = rng.uniform([0.5, 0.5, 1.0], dims - [0.5, 0.5, 1.0])
    room.add_microphone(mic)
    for _ in range(n_sources):
        for _try in range(50):
            pos = rng.uniform([0.4, 0.4, 1.0], dims - [0.4, 0.4, 0.8])
            if np.linalg.norm(pos - mic) > 0.7:
                break
        room.add_source(pos)
    room.compute_rir()
    out = []
    for k in range(n_sources):
        r = np.asarray(room.rir[0][k], dtype=np.float64)
        d = int(np.argmax(np.abs(r)))
        w0, w1, start = d + int(0.02 * SR), d + int(0.05 * SR), d + int(0.03 * SR)
        length = start + int(1.2 * rt60 * SR)
        h = np.zeros(max(length, len(r)))
        h[: len(r)] = r
        ref = float(np.mean(r[w0:w1] ** 2)) if w1 <= len(r) else float(np.mean(r[d:] ** 2))
        t = np.arange(length - start) / SR
        tail = rng.standard_normal(length - start) * np.exp(-6.908 * t / rt60)
        fade = np.minimum(1.0, t / 0.02)  # 20 ms fade-in over the image-source part
        h[start:length] += np.sqrt(ref) * tail * fade
        out.append((h / (np.abs(h).max() + EPS)).astype(np.float32))
    return out


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a RIR, keep the input length ``[T]`` (float32)."""
    from scipy.signal import fftconvolve

    return fftconvolve(np.asarray(x, dtype=np.float64), rir)[: len(x)].astype(np.float32)


def bandlimit(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Telephone channel: band-pass then 16 k -> 8 k -> 16 k resampling. Returns ``[T]``."""
    from scipy.signal import butter, sosfilt

    cutoff = float(rng.uniform(3400.0, 3900.0))
    hp = float(rng.uniform(100.0, 300.0))
    sos = butter(8, cutoff, btype="low", fs=SR, output="sos")
    sos_hp = butter(2, hp, btype="high", fs=SR, output="sos")
    y = sosfilt(sos_hp, sosfilt(sos, np.asarray(x, dtype=np.float64)))
    y = resample(resample(y.astype(np.float32), SR, 8000), 8000, SR)
    return fit_length(y, len(x)), {"lowpass_hz": cutoff, "highpass_hz": hp}


def drift(source: np.ndarray, n: int, rng: np.random.Generator, offset: int = 0) -> tuple[np.ndarray, dict]:
    """Progressive voice drift: time-varying resampling of ``source`` from ``offset``.

    The playback rate ramps linearly from 1 at the start to ``r`` (0.87-0.92 or 1.08-1.15)
    at the end, so pitch and formants shift progressively (and the tempo with them).

    Returns:
        (drifted ``[n]`` float32, info with ``drift_rate``).
    """
    r = float(rng.uniform(1.08, 1.15)) if rng.random() < 0.5 else float(rng.uniform(0.87, 0.92))
    src = resample(np.asarray(source, dtype=np.float32), SR, 2 * SR)  # interpolate at 2x
    rate = 1.0 + (r - 1.0) * np.arange(n) / max(1, n - 1)
    pos = 2.0 * (offset + np.concatenate([[0.0], np.cumsum(rate[:-1])]))
    y = np.interp(pos, np.arange(len(src)), src, right=0.0).astype(np.float32)
    return y, {"drift_rate": r}


def _other_voice(corpus, speaker: str, split: str | None, n: int, rng: np.random.Generator,
                 exclude: set[str]) -> tuple[np.ndarray, str]:
    pool = [s for s in corpus.speakers(split) if s != speaker and s not in exclude]
    if not pool:
        pool = [s for s in corpus.speakers(None) if s != speaker]
    # a competitor must not be a derived copy of the target's own voice
    by = {u.speaker: u for u in corpus.utterances}
    root = by[speaker].parent_speaker or speaker if speaker in by else speaker
    pool = [s for s in pool if (by[s].parent_speaker or s) != root] or pool
    s = pool[int(rng.integers(len(pool)))]
    utts = corpus.utts_of(s)
    u = utts[int(rng.integers(len(utts)))]
    return random_crop_of(corpus, u.utt_id, n, rng), s


# --------------------------------------------------------------------------- API
def _apply_plugin(name: str, parts: dict[str, Any], rng: np.random.Generator, corpus, split: str | None,
                  enroll_s: float) -> dict[str, Any]:
    """A user enrollment condition (:mod:`bench.data.condition_spec`) on a clean enrollment."""
    from bench.data.condition_spec import ConditionContext, apply_plugin, condition_names
    from bench.registry import RegistryError, get

    try:
        cond = get("condition", name)
    except RegistryError:
        enroll = [c for c in condition_names() if c not in STREAM_CONDITIONS]
        raise ValueError(f"unknown condition {name!r}; choices: {', '.join(enroll)}") from None
    clean = fit_length(parts["enroll_source"], int(round(enroll_s * SR)))
    ctx = ConditionContext(corpus, split, parts["speaker"], frozenset(parts.get("exclude", ())))
    enr, info = apply_plugin(cond, clean, rng, ctx)
    return {"enrollment": np.asarray(enr, dtype=np.float32), "enrollment_clean": clean,
            "target": np.asarray(parts["target"], dtype=np.float32),
            "info": {"condition": name, "enroll_s": len(clean) / SR, **info}}


def apply_condition(name: str, parts: dict[str, Any], rng: np.random.Generator, corpus,
                    split: str | None = None, enroll_s: float = 3.0,
                    competing_sir_db: tuple[float, float] | list[float] = COMPETING_SIR_DB) -> dict[str, Any]:
    """Apply evaluation condition ``name``.

    Args:
        name: one of :data:`bench.config.ENROLL_CONDITIONS`.
        parts: ``enroll_source`` (clean enrollment utterance ``[Ts]``), ``target``
            (dry clean test-target segment ``[T]``), ``speaker``; for ``drift`` also
            ``target_source`` (full target utterance) and ``target_offset`` (sample index);
            optionally ``exclude`` (speakers not to use as competitors / babble).
        rng: random generator (all randomness of the condition).
        corpus: :class:`bench.data.corpus.Corpus` (for babble and competing voices).
        split: split to draw other voices from.
        enroll_s: enrollment length in seconds (``short`` draws its own).
        competing_sir_db: ``[lo, hi]`` dB range of the target-to-competitor ratio
            (``competing``, ``combined``).

    Returns:
        dict with ``enrollment`` ``[Te]`` (degraded), ``enrollment_clean`` ``[Te]``,
        ``target`` ``[T]`` (dry; changed only by ``drift``) and ``info`` (condition meta).

    Raises:
        ValueError: unknown condition name (the message lists the choices).
    """
    if name in STREAM_CONDITIONS:
        raise ValueError(f"{name!r} is a stream condition: build it with bench.data.streams.make_stream_set "
                         "(or bench.data.mix.make_eval_set)")
    if name not in ENROLL_CONDITIONS:
        return _apply_plugin(name, parts, rng, corpus, split, enroll_s)
    speaker = parts["speaker"]
    exclude = set(parts.get("exclude", ())) | {speaker}
    target = np.asarray(parts["target"], dtype=np.float32)
    length_s = float(rng.uniform(0.5, 2.0)) if name == "short" else enroll_s
    n = int(round(length_s * SR))
    clean = fit_length(parts["enroll_source"], n)
    enr = clean.astype(np.float64)
    info: dict[str, Any] = {"condition": name, "enroll_s": n / SR}

    if name in COMPETING_CONDITIONS:
        other, who = _other_voice(corpus, speaker, split, n, rng, exclude)
        sir = float(rng.uniform(float(competing_sir_db[0]), float(competing_sir_db[1])))
        enr = enr + scale_to_ratio(clean, other, sir)
        info.update(competing_speaker=who, competing_sir_db=sir)
    if name in ("reverb", "combined"):
        rt60 = float(rng.uniform(0.6, 0.9))
        rir = random_rir(rng, rt60)[0]
        enr = reverberate(enr, rir).astype(np.float64)
        info["rt60_s"] = rt60
    if name == "noisy":
        kinds = ["babble", "white", "pink", "brown", "samples"]
        kind = kinds[int(rng.integers(len(kinds)))]
        snr = 0.0 if kind == "babble" else float(rng.uniform(0.0, 5.0))
        noise, ninfo = sample_noise(corpus, kind, n, rng, exclude, split)
        enr = enr + scale_to_ratio(enr, noise, snr)
        info.update({f"enroll_{k}": v for k, v in ninfo.items()})
        info["enroll_snr_db"] = snr
    if name == "combined":
        noise, ninfo = sample_noise(corpus, "babble", n, rng, exclude, split)
        enr = enr + scale_to_ratio(enr, noise, 5.0)
        info.update({f"enroll_{k}": v for k, v in ninfo.items()})
        info["enroll_snr_db"] = 5.0
    if name in ("bandlimited", "combined"):
        enr, binfo = bandlimit(enr.astype(np.float32), rng)
        info.update(binfo)
    if name == "drift":
        src = parts.get("target_source", target)
        target, dinfo = drift(src, len(target), rng, int(parts.get("target_offset", 0)))
        info.update(dinfo)
    return {
        "enrollment": np.asarray(enr, dtype=np.float32),
        "enrollment_clean": clean,
        "target": target,
        "info": info,
    }
