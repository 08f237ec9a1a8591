"""Long test streams in the paper's regime: the target's voice changes while the model runs.

A stream is ``eval.stream_s`` seconds (default 16) of several different utterances of one
target speaker, concatenated with short pauses (an utterance is never looped; the list is cycled
only when a speaker has too little audio, and never the same utterance twice in a row), mixed
with one interfering speaker's stream and noise at the levels of ``mix`` (exact over the whole
stream). Where ``mix.shares`` is set (an operating level such as ``field``), a stream holds, as a
short mixture does, the noise only, the interferer only or both, drawn by those shares from a
generator of its own (so every other draw of the stream is the one it had before); without shares
every stream holds both. The enrollment is clean: the first ``mix.enroll_s`` seconds of another
utterance of the target, one that is not in the stream. Part-way, at the start of the utterance nearest to a
point drawn in 40-60 % of the stream, the target changes (conditions in :data:`STREAM_CONDITIONS`):

* ``voice_change``: from there on the target's voice is perturbed: played at a constant rate
  ``r`` in 0.88-0.92 or 1.08-1.12 (pitch and formants move by ``r``; tempo too), the same voice
  in another "session";
* ``channel_change``: from there on the target reaches the microphone through another channel:
  a band-pass (high-pass 200-400 Hz, low-pass 3.0-3.8 kHz), a two-band random EQ (+-6 dB) and a
  simulated room (RT60 0.3-0.7 s), level-matched to the unprocessed target;
* ``drift_long``: the voice drifts slowly over the whole stream: the playback rate ramps linearly
  from 1 to 0.87-0.92 or 1.08-1.15 (the "change" is put at the middle for the ``late_*`` metrics).

The three conditions share the target, enrollment, interferer, noise, levels and change point of
stream ``i`` (paired), only the change differs. ``meta`` records ``change_s`` and
``late_start_s`` (one second after the change), from which ``late_*`` metrics are scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.audio import SR, resample
from bench.cache import config_hash
from bench.config import STREAM_CONDITIONS
from bench.data.conditions import drift, power, random_rir, reverberate, sample_noise
from bench.data.mixture import INTERFERER_ONLY, NOISE_ONLY, Mixture, compose, draw_kind
from bench.data.pieces import enrollment_of

LATE_SKIP_S = 1.0  # late metrics start this long after the change
GAP_S = (0.1, 0.4)  # pause between concatenated utterances
CHANGE_FRAC = (0.4, 0.6)


def concat_utterances(corpus: Any, utt_ids: list[str], n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Concatenate the utterances ``utt_ids`` (in order, cycling when too short) with pauses of
    ``GAP_S`` seconds, cropped to ``n`` samples.

    Returns:
        ``(audio [n] float32, starts)``: the sample index where each used utterance begins.
    """
    if not utt_ids:
        raise ValueError("no utterances to concatenate")
    parts: list[np.ndarray] = []
    starts: list[int] = []
    total = 0
    k = 0
    while total < n:
        x = np.asarray(corpus.audio(utt_ids[k % len(utt_ids)]), dtype=np.float32)
        starts.append(total)
        parts.append(x)
        total += len(x)
        gap = int(rng.uniform(*GAP_S) * SR)
        parts.append(np.zeros(gap, dtype=np.float32))
        total += gap
        k += 1
        if k > 10_000:  # only silent/empty audio could get here
            raise ValueError(f"utterances {utt_ids[:3]}... hold no audio")
    return np.concatenate(parts)[:n], [s for s in starts if s < n]


def speed(x: np.ndarray, rate: float) -> np.ndarray:
    """Play ``x`` at ``rate`` (resampling: pitch, formants and tempo all scale by ``rate``)."""
    r = round(float(rate), 2)
    return resample(np.asarray(x, dtype=np.float32), int(round(SR * r)), SR)


def channel(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Another channel: band-pass, two random peaking EQ bands, a room; level-matched to ``x``."""
    from scipy.signal import butter, sosfilt

    x64 = np.asarray(x, dtype=np.float64)
    hp = float(rng.uniform(200.0, 400.0))
    lp = float(rng.uniform(3000.0, 3800.0))
    y = sosfilt(butter(4, hp, btype="high", fs=SR, output="sos"), x64)
    y = sosfilt(butter(6, lp, btype="low", fs=SR, output="sos"), y)
    eq = []
    for _ in range(2):
        f0 = float(rng.uniform(400.0, 3000.0))
        gain = float(rng.uniform(-6.0, 6.0))
        y = _peaking(y, f0, gain, q=1.0)
        eq.append((round(f0), round(gain, 1)))
    rt60 = float(rng.uniform(0.3, 0.7))
    y = reverberate(y.astype(np.float32), random_rir(rng, rt60)[0]).astype(np.float64)
    y *= np.sqrt(power(x64) / max(power(y), 1e-12))
    return y.astype(np.float32), {"highpass_hz": hp, "lowpass_hz": lp, "eq": eq, "rt60_s": rt60}


def _peaking(x: np.ndarray, f0: float, gain_db: float, q: float) -> np.ndarray:
    """RBJ peaking-EQ biquad."""
    from scipy.signal import lfilter

    a_ = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / SR
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a_, -2 * np.cos(w0), 1 - alpha * a_])
    a = np.array([1 + alpha / a_, -2 * np.cos(w0), 1 - alpha / a_])
    return lfilter(b / a[0], a / a[0], x)


def _rate(rng: np.random.Generator, lo: tuple[float, float], hi: tuple[float, float]) -> float:
    return float(rng.uniform(*hi)) if rng.random() < 0.5 else float(rng.uniform(*lo))


def _root(corpus: Any, speaker: str) -> str:
    us = corpus.utts_of(speaker)
    return (us[0].parent_speaker or speaker) if us else speaker


def make_stream(corpus: Any, split: str | None, mix_cfg: Any, condition: str, index: int, seed: int,
                stream_s: float, speakers: list[str]) -> dict[str, Any]:
    """The pieces of stream ``index`` under ``condition`` (see the module docstring).

    Returns:
        dict with ``target`` (dry, changed) ``[n]``, ``interferer`` ``[n]`` or None, ``noise``
        ``[n]`` (unit power) or None, ``enrollment`` ``[Te]``, ``speaker``, ``sir_db``, ``snr_db``
        and ``meta``. Which of interferer and noise the stream holds is drawn by ``mix_cfg.shares``
        (both without shares); the other is still drawn and then dropped, so the draws stay paired.
    """
    if condition not in STREAM_CONDITIONS:
        raise ValueError(f"unknown stream condition {condition!r}; choices: {', '.join(STREAM_CONDITIONS)}")
    n = int(round(stream_s * SR))
    split_tag = int(config_hash(split or "all", length=8), 16)
    rng = np.random.default_rng([seed, split_tag, index, 77])
    spk = speakers[index % len(speakers)]
    utts = [u.utt_id for u in corpus.utts_of(spk, split)]
    order = [utts[j] for j in rng.permutation(len(utts))]
    enroll_id, stream_ids = order[0], order[1:]
    # room for a slower voice after the change: 20 % more source than the stream needs
    src, starts = concat_utterances(corpus, stream_ids, int(n * 1.2) + SR, rng)
    lo, hi = int(CHANGE_FRAC[0] * n), int(CHANGE_FRAC[1] * n)
    want = int(rng.uniform(lo, hi))
    inside = [s for s in starts if lo <= s <= hi]
    change = min(inside, key=lambda s: abs(s - want)) if inside else want
    root = _root(corpus, spk)
    others = [s for s in speakers if s != spk and _root(corpus, s) != root] or [s for s in speakers if s != spk]
    other = others[int(rng.integers(len(others)))]
    o_utts = [u.utt_id for u in corpus.utts_of(other, split)]
    inter, _ = concat_utterances(corpus, [o_utts[j] for j in rng.permutation(len(o_utts))], n, rng)
    sir = float(rng.uniform(*mix_cfg.sir_db))
    snr = float(rng.uniform(*mix_cfg.snr_db))
    noise, ninfo = None, {"noise_type": "none"}
    if mix_cfg.noise_types:
        kind = mix_cfg.noise_types[int(rng.integers(len(mix_cfg.noise_types)))]
        noise, ninfo = sample_noise(corpus, kind, n, rng, {spk, other}, split)
    holds = draw_kind(mix_cfg, np.random.default_rng([seed, split_tag, index, 91]))
    interferers: list[str] = [other]
    if holds == NOISE_ONLY:
        inter, interferers = None, []
    elif holds == INTERFERER_ONLY:
        noise, ninfo = None, {"noise_type": "none"}

    crng = np.random.default_rng([seed, split_tag, index, int(config_hash(condition, length=8), 16)])
    info: dict[str, Any] = {"condition": condition}
    if condition == "voice_change":
        r = _rate(crng, (0.88, 0.92), (1.08, 1.12))
        post = speed(src[change:], r)
        target = np.concatenate([src[:change], post])[:n]
        info["voice_rate"] = round(r, 2)
    elif condition == "channel_change":
        post, cinfo = channel(src[change:n], crng)
        target = np.concatenate([src[:change], post])
        info.update({f"channel_{k}": v for k, v in cinfo.items()})
    else:
        target, dinfo = drift(src, n, crng)
        change = n // 2
        info.update(dinfo)
    target = np.asarray(target[:n], dtype=np.float32)
    if len(target) < n:
        target = np.pad(target, (0, n - len(target)))
    info.update({
        "change_s": change / SR, "late_start_s": min(n, change + int(LATE_SKIP_S * SR)) / SR,
        "stream_s": n / SR, "enroll_utt": enroll_id, "stream_utts": stream_ids, "interferers": interferers,
        **ninfo,
    })
    return {"target": target, "interferer": inter, "noise": noise,
            "enrollment": enrollment_of(corpus, enroll_id, mix_cfg.enroll_s),
            "speaker": spk, "sir_db": sir, "snr_db": snr, "meta": info}


def stream_speakers(corpus: Any, split: str | None) -> list[str]:
    """Speakers of ``split`` with at least two utterances (one enrolls, the others stream)."""
    spk = [s for s in corpus.speakers(split) if len(corpus.utts_of(s, split)) >= 2]
    if len(spk) < 2:
        raise ValueError(f"split {split or 'all'!r} has {len(spk)} speaker(s) with >= 2 utterances; "
                         "a stream condition needs at least 2 (target and interferer)")
    return spk


def make_stream_set(corpus: Any, split: str | None, mix_cfg: Any, condition: str, n: int, seed: int,
                    stream_s: float) -> list:
    """``n`` mixtures of ``condition`` (:class:`bench.data.mixture.Mixture`), paired across the
    stream conditions; target speakers cycle through the split's speakers."""
    speakers = stream_speakers(corpus, split)
    out = []
    for i in range(n):
        s = make_stream(corpus, split, mix_cfg, condition, i, seed, stream_s, speakers)
        others = [] if s["interferer"] is None else [s["interferer"]]
        mix, tgt, inter, nz = compose(s["target"], others, s["noise"], s["sir_db"], s["snr_db"])
        enr = np.asarray(s["enrollment"], dtype=np.float32)
        meta = {**s["meta"], "sir_db": s["sir_db"] if others else None,
                "snr_db": s["snr_db"] if s["noise"] is not None else None,
                "index": i, "seed": seed, "split": split or "all", "room": False}
        out.append(Mixture(mix, tgt, enr, enr.copy(), s["speaker"], meta, inter, nz))
    return out


__all__ = ["STREAM_CONDITIONS", "channel", "concat_utterances", "make_stream", "make_stream_set",
           "speed", "stream_speakers"]
