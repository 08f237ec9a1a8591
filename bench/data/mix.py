"""Mixtures for training and fixed, paired evaluation sets.

A mixture is ``target + interference + noise``:

- ``target``: a crop of a clean utterance of the target speaker. When a room is applied
  (probability ``mix_cfg.room_prob``) it is the *reverberant* target, exactly as present in
  the mixture; it is always the metric reference.
- ``interference``: the sum of 1-2 other speakers of the same split (``mix_cfg.n_interferers``),
  each with its own room position when a room is used, scaled so that
  ``SIR = 10 log10(sum(target**2) / sum(interference**2))`` equals the value drawn from
  ``mix_cfg.sir_db``.
- ``noise``: white / pink / brown / babble (3-6 other speakers) / real samples, scaled so that
  ``SNR = 10 log10(sum(target**2) / sum(noise**2))`` equals the value drawn from ``mix_cfg.snr_db``.

Levels are exact on the returned float32 signals (to float rounding). The whole mixture
(all components alike) is finally scaled so the mixture peak is at most 0.95.

Training enrollments are deterministic: the first ``enroll_s`` seconds (looped when shorter)
of a *different* utterance of the target speaker, so teacher embeddings can be cached per
enrollment utterance id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.audio import SR
from bench.cache import atomic_path, config_hash
from bench.config import COMPETING_SIR_DB
from bench.data.conditions import apply_condition, power, random_rir, sample_noise
from bench.data.mixture import (  # noqa: F401  (exported)
    INTERFERER_ONLY,
    NOISE_ONLY,
    Mixture,
    compose,
    draw_kind,
    enrollment_crop,
)
from bench.data.pieces import crop_of, enrollment_of, frames_of, power_of
from bench.data.streams import make_stream_set


def _active_crop(corpus, utt_id: str, n: int, rng: np.random.Generator, tries: int = 8) -> tuple[np.ndarray, int]:
    """Random ``n``-sample crop of an utterance whose power is not negligible against the whole
    utterance's (returns crop and start). The crops are read alone where the corpus can
    (:mod:`bench.data.pieces`): the same samples as cut from the whole waveform."""
    best, best_p, best_s = None, -1.0, 0
    ref = power_of(corpus, utt_id)
    length = frames_of(corpus, utt_id)
    for _ in range(tries):
        start = int(rng.integers(0, length - n + 1)) if length > n else 0
        c = crop_of(corpus, utt_id, start, n)
        p = power(c)
        if p > 0.1 * ref:
            return c, start
        if p > best_p:
            best, best_p, best_s = c, p, start
    return best, best_s


def measured_ratio_db(ref: np.ndarray, other: np.ndarray) -> float:
    """``10 log10(sum(ref**2) / sum(other**2))`` in float64."""
    return float(10 * np.log10(power(ref) / max(power(other), 1e-30)))


class MixtureSampler:
    """Random mixtures from one split of a corpus.

    Args:
        corpus: :class:`bench.data.corpus.Corpus`.
        split: ``train``, ``val`` or ``test``.
        mix_cfg: :class:`bench.config.MixConfig`.
        seed: seed of the sampler's own generator (used when ``sample``/``batch`` get no rng).

    Raises:
        ValueError: the split has fewer than 2 speakers.
    """

    def __init__(self, corpus, split: str, mix_cfg, seed: int = 0) -> None:
        self.corpus = corpus
        self.split = split
        self.cfg = mix_cfg
        self.speakers = corpus.speakers(split)
        if len(self.speakers) < 2:
            raise ValueError(f"split {split!r} has {len(self.speakers)} speaker(s); mixing needs >= 2")
        self.speaker_index = {s: i for i, s in enumerate(self.speakers)}
        self.utts = {s: corpus.utts_of(s, split) for s in self.speakers}
        self.rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- pieces
    def _pick_utt(self, speaker: str, rng: np.random.Generator, avoid: str | None = None):
        us = self.utts[speaker]
        cand = [u for u in us if u.utt_id != avoid] or us
        return cand[int(rng.integers(len(cand)))]

    def enroll_utt(self, speaker: str, target_utt: str, rng: np.random.Generator):
        """A different utterance of ``speaker`` than ``target_utt`` (same one if it has only one)."""
        return self._pick_utt(speaker, rng, avoid=target_utt)

    def _draw(self, rng: np.random.Generator, n: int, speaker: str | None = None,
              with_source: bool = False) -> dict[str, Any]:
        """Draw everything about a mixture except the enrollment condition (``with_source``: also
        the whole target utterance, ``target_source``, which the ``drift`` condition reads)."""
        cfg = self.cfg
        spk = speaker or self.speakers[int(rng.integers(len(self.speakers)))]
        tu = self._pick_utt(spk, rng)
        tsrc = self.corpus.audio(tu.utt_id) if with_source else None
        target, offset = _active_crop(self.corpus, tu.utt_id, n, rng)
        eu = self.enroll_utt(spk, tu.utt_id, rng)
        others = [s for s in self.speakers if s != spk]
        kind = draw_kind(cfg, rng)
        k = int(cfg.n_interferers[int(rng.integers(len(cfg.n_interferers)))]) if cfg.n_interferers else 0
        k = min(0 if kind == NOISE_ONLY else k, len(others))
        inter_spk = [others[i] for i in rng.choice(len(others), size=k, replace=False)] if k else []
        inters, inter_utts = [], []
        for s in inter_spk:
            iu = self._pick_utt(s, rng)
            x, _ = _active_crop(self.corpus, iu.utt_id, n, rng)
            inters.append(x)
            inter_utts.append(iu.utt_id)
        sir = float(rng.uniform(*cfg.sir_db))
        snr = float(rng.uniform(*cfg.snr_db))
        noise, ninfo = None, {"noise_type": "none"}
        if cfg.noise_types and kind != INTERFERER_ONLY:
            kind = cfg.noise_types[int(rng.integers(len(cfg.noise_types)))]
            noise, ninfo = sample_noise(self.corpus, kind, n, rng, set(inter_spk) | {spk}, self.split)
        rirs, rt60 = None, None
        if cfg.room_prob > 0 and rng.random() < cfg.room_prob:
            rt60 = float(rng.uniform(0.2, 0.8))
            rirs = random_rir(rng, rt60, 1 + len(inters))
        return {
            "speaker": spk, "target": target, "target_source": tsrc, "target_offset": offset,
            "target_utt": tu.utt_id, "enroll_utt": eu.utt_id, "interferers": inters,
            "interferer_speakers": inter_spk, "interferer_utts": inter_utts, "sir_db": sir,
            "snr_db": snr, "noise": noise, "noise_info": ninfo, "rirs": rirs, "rt60_s": rt60,
        }

    def _assemble(self, d: dict[str, Any], target: np.ndarray, enrollment: np.ndarray,
                  enrollment_clean: np.ndarray, extra: dict[str, Any]) -> Mixture:
        mix, tgt, inter, nz = compose(target, d["interferers"], d["noise"], d["sir_db"],
                                      d["snr_db"], d["rirs"])
        meta = {
            "sir_db": d["sir_db"] if d["interferers"] else None,
            "snr_db": d["snr_db"] if d["noise"] is not None else None,
            "target_utt": d["target_utt"], "enroll_utt": d["enroll_utt"],
            "target_offset": int(d["target_offset"]),
            "interferers": d["interferer_speakers"], "interferer_utts": d["interferer_utts"],
            "room": d["rirs"] is not None, "rt60_s": d["rt60_s"], "split": self.split,
            **d["noise_info"], **extra,
        }
        return Mixture(mix, tgt, np.asarray(enrollment, np.float32),
                       np.asarray(enrollment_clean, np.float32), d["speaker"], meta, inter, nz)

    # ---------------------------------------------------------------- API
    def sample(self, rng: np.random.Generator | None = None, segment_s: float | None = None) -> Mixture:
        """One training mixture with the deterministic clean enrollment.

        Args:
            rng: random generator (the sampler's own when None).
            segment_s: mixture length in seconds (``mix_cfg.segment_s`` when None).

        Returns:
            :class:`Mixture` with ``mixture``/``target`` ``[T]`` and ``enrollment`` ``[Te]``
            (``Te = enroll_s * SR``).
        """
        rng = rng if rng is not None else self.rng
        n = int(round((segment_s or self.cfg.segment_s) * SR))
        d = self._draw(rng, n)
        enr = enrollment_of(self.corpus, d["enroll_utt"], self.cfg.enroll_s)
        return self._assemble(d, d["target"], enr, enr, {"condition": "train"})

    def batch(self, rng: np.random.Generator | None = None, batch_size: int = 8,
              segment_s: float | None = None) -> dict[str, Any]:
        """A training batch.

        Returns:
            dict with torch tensors ``mixture`` ``[B,T]``, ``target`` ``[B,T]``,
            ``enrollment`` ``[B,Te]``, ``speaker_idx`` ``[B]`` (int64, index into
            :attr:`speakers`), and lists ``utt_ids`` / ``enroll_ids`` / ``speakers`` (str).
        """
        import torch

        rng = rng if rng is not None else self.rng
        ms = [self.sample(rng, segment_s) for _ in range(batch_size)]
        return {
            "mixture": torch.from_numpy(np.stack([m.mixture for m in ms])),
            "target": torch.from_numpy(np.stack([m.target for m in ms])),
            "enrollment": torch.from_numpy(np.stack([m.enrollment for m in ms])),
            "speaker_idx": torch.tensor([self.speaker_index[m.speaker] for m in ms], dtype=torch.long),
            "utt_ids": [m.meta["target_utt"] for m in ms],
            "enroll_ids": [m.meta["enroll_utt"] for m in ms],
            "speakers": [m.speaker for m in ms],
        }


# --------------------------------------------------------------------------- eval sets
def make_eval_set(corpus, split: str, mix_cfg, condition: str, n: int, seed: int,
                  test_s: float, competing_sir_db: tuple[float, float] | list[float] = COMPETING_SIR_DB,
                  stream_s: float = 16.0, stream_levels: tuple[list[float], list[float]] | None = None,
                  ) -> list[Mixture]:
    """A fixed evaluation set of ``n`` mixtures under ``condition``.

    Paired across conditions: the target utterance and crop, enrollment utterance,
    interferers, noise, levels and room depend only on ``(corpus, split, mix_cfg, n, seed,
    test_s)``; the condition changes the enrollment only (and, for ``drift``, the test target,
    with the same interferers, noise and levels). Target speakers cycle through the split's
    sorted speaker list so every speaker is tested.

    Args:
        corpus: :class:`bench.data.corpus.Corpus`.
        split: ``val`` or ``test`` (any split works).
        mix_cfg: :class:`bench.config.MixConfig`.
        condition: a name of :data:`bench.config.CONDITIONS`.
        n: number of mixtures.
        seed: eval-set seed.
        test_s: mixture length in seconds.
        competing_sir_db: ``[lo, hi]`` dB of the other voice in ``competing`` / ``combined``
            enrollments.
        stream_s: length of the long streams of the stream conditions (``voice_change``,
            ``channel_change``, ``drift_long``; see :mod:`bench.data.streams`), seconds.
        stream_levels: ``(sir_db, snr_db)`` ranges of the streams' interferer and noise (default:
            those of ``mix_cfg``).

    ``split`` ``all`` (or None) draws from every speaker of the corpus (cross-corpus tests).

    Returns:
        list of :class:`Mixture`, ``meta["index"]`` is the position in the set.
    """
    from bench.config import STREAM_CONDITIONS
    from bench.data.condition_spec import condition_names

    if condition not in condition_names():
        raise ValueError(f"unknown condition {condition!r}; choices: {', '.join(condition_names())}")
    split = None if split in (None, "all") else split
    if condition in STREAM_CONDITIONS:
        if stream_levels is not None:
            from dataclasses import replace

            mix_cfg = replace(mix_cfg, sir_db=list(stream_levels[0]), snr_db=list(stream_levels[1]))
        return make_stream_set(corpus, split, mix_cfg, condition, n, seed, stream_s)
    sampler = MixtureSampler(corpus, split, mix_cfg, seed)
    length = int(round(test_s * SR))
    split_tag = int(config_hash(split or "all", length=8), 16)
    cond_tag = int(config_hash(condition, length=8), 16)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, split_tag, i])
        spk = sampler.speakers[i % len(sampler.speakers)]
        d = sampler._draw(rng, length, speaker=spk, with_source=True)
        parts = {
            "speaker": spk, "target": d["target"], "target_source": d["target_source"],
            "target_offset": d["target_offset"], "enroll_source": corpus.audio(d["enroll_utt"]),
            "exclude": d["interferer_speakers"],
        }
        crng = np.random.default_rng([seed, split_tag, i, cond_tag])
        res = apply_condition(condition, parts, crng, corpus, split, mix_cfg.enroll_s, competing_sir_db)
        m = sampler._assemble(d, res["target"], res["enrollment"], res["enrollment_clean"],
                              {**res["info"], "index": i, "seed": seed})
        out.append(m)
    return out


_ARRAYS = ("mixture", "target", "enrollment", "enrollment_clean", "interference", "noise")


def save_eval_set(path: str | Path, mixtures: list[Mixture]) -> None:
    """Save mixtures to one ``.npz`` (atomic). Metadata is stored as JSON."""
    arrays: dict[str, np.ndarray] = {}
    metas = []
    for i, m in enumerate(mixtures):
        for k in _ARRAYS:
            v = getattr(m, k)
            if v is not None:
                arrays[f"{i}/{k}"] = np.asarray(v, dtype=np.float32)
        metas.append({"speaker": m.speaker, "meta": m.meta})
    arrays["__meta__"] = np.frombuffer(json.dumps(metas, default=_json_default).encode(), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def load_eval_set(path: str | Path) -> list[Mixture]:
    """Load mixtures saved by :func:`save_eval_set`."""
    with np.load(path, allow_pickle=False) as z:
        metas = json.loads(z["__meta__"].tobytes().decode())
        out = []
        for i, md in enumerate(metas):
            arr = {k: (z[f"{i}/{k}"] if f"{i}/{k}" in z.files else None) for k in _ARRAYS}
            out.append(Mixture(arr["mixture"], arr["target"], arr["enrollment"],
                               arr["enrollment_clean"], md["speaker"], md["meta"],
                               arr["interference"], arr["noise"]))
    return out
