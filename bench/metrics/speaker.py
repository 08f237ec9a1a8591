"""Speaker-verification metrics: EER, minDCF, trial-based evaluation of an embedding function.

``eer`` and ``min_dcf`` take trial scores (higher = more likely same speaker) and binary labels
(1 = target trial, 0 = non-target). ``speaker_eval`` crops ``n_per_speaker`` utterances of each
speaker of a split, embeds them and scores every pair by cosine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from bench.data.pieces import frames_of, segment_of


def _roc(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every threshold (sorted descending scores)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    n_tar, n_non = int(y.sum()), int((~y).sum())
    if n_tar == 0 or n_non == 0:
        raise ValueError(f"need both target and non-target trials (got {n_tar} target, {n_non} non-target)")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    # keep the last index of each run of tied scores (threshold between distinct values)
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.r_[0, tp[last]]
    fp = np.r_[0, fp[last]]
    p_miss = 1.0 - tp / n_tar
    p_fa = fp / n_non
    thr = np.r_[np.inf, s[last]]
    return p_miss, p_fa, thr


def eer(scores: Any, labels: Any) -> float:
    """Equal error rate in [0, 1] (linear interpolation where miss and false-alarm curves cross)."""
    p_miss, p_fa, _ = _roc(scores, labels)
    d = p_miss - p_fa  # decreasing from 1 to -1
    idx = int(np.nonzero(d <= 0)[0][0])
    if d[idx] == 0 or idx == 0:
        return float(p_fa[idx])
    # interpolate between idx-1 (d>0) and idx (d<=0)
    d0, d1 = d[idx - 1], d[idx]
    w = d0 / (d0 - d1)
    m = p_miss[idx - 1] + w * (p_miss[idx] - p_miss[idx - 1])
    f = p_fa[idx - 1] + w * (p_fa[idx] - p_fa[idx - 1])
    return float((m + f) / 2)


def min_dcf(
    scores: Any, labels: Any, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> float:
    """Minimum normalised detection cost: min over thresholds of
    ``(c_miss * p_target * P_miss + c_fa * (1 - p_target) * P_fa) / min(c_miss * p_target, c_fa * (1 - p_target))``."""
    p_miss, p_fa, _ = _roc(scores, labels)
    dcf = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


def agreement(student_emb: Any, teacher_emb: Any) -> float:
    """Mean cosine between matching rows of two ``[N, D]`` embedding sets."""
    s = torch.as_tensor(np.asarray(student_emb) if not torch.is_tensor(student_emb) else student_emb)
    t = torch.as_tensor(np.asarray(teacher_emb) if not torch.is_tensor(teacher_emb) else teacher_emb)
    s, t = s.float().cpu(), t.float().cpu()
    return float(torch.nn.functional.cosine_similarity(s, t, dim=-1).mean())


# --------------------------------------------------------------------------- corpus helpers
def utt_ids_of(corpus: Any, speaker: str, split: str | None) -> list[str]:
    """Utterance ids of ``speaker`` in ``split`` (every split when None) for any corpus following
    the Corpus contract.

    Accepts ``utts_of(speaker, split)`` or ``utts_of(speaker)`` returning ids or Utterance
    objects (with ``utt_id`` and optionally ``split``).
    """
    try:
        items = corpus.utts_of(speaker, split)
    except TypeError:
        items = corpus.utts_of(speaker)
    out = []
    for u in items:
        if isinstance(u, str):
            out.append(u)
        else:
            if split is not None and getattr(u, "split", split) not in (split, None, ""):
                continue
            out.append(u.utt_id)
    return sorted(out)


def crop_audio(x: np.ndarray, start: int, end: int) -> np.ndarray:
    """``x[start:end]`` zero-padded to ``end - start`` samples."""
    seg = np.asarray(x[max(start, 0) : end], dtype=np.float32)
    n = end - start
    if seg.shape[0] < n:
        seg = np.pad(seg, (0, n - seg.shape[0]))
    return seg


def eval_crops(
    corpus: Any, split: str, n_per_speaker: int, crop_s: float, seed: int
) -> tuple[list[str], list[tuple[int, int]], list[int]]:
    """Deterministic ``(utt_ids, crops, speaker_idx)``: up to ``n_per_speaker`` utterances per
    speaker of ``split``, each cropped to ``crop_s`` seconds (random start, seeded)."""
    from bench.audio import SR

    rng = np.random.default_rng(seed)
    n = int(round(crop_s * SR))
    ids, crops, spk = [], [], []
    for si, speaker in enumerate(sorted(corpus.speakers(split))):
        utts = utt_ids_of(corpus, speaker, split)
        if not utts:
            continue
        pick = rng.permutation(len(utts))[:n_per_speaker]
        for j in sorted(pick.tolist()):
            uid = utts[j]
            length = frames_of(corpus, uid)
            start = int(rng.integers(0, max(1, length - n + 1)))
            ids.append(uid)
            crops.append((start, start + n))
            spk.append(si)
    return ids, crops, spk


def trial_scores(emb: torch.Tensor, speakers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and labels of all unordered pairs of rows of ``emb``."""
    e = torch.nn.functional.normalize(torch.as_tensor(emb).float(), dim=-1)
    sim = (e @ e.T).numpy()
    spk = np.asarray(speakers)
    iu = np.triu_indices(len(spk), k=1)
    return sim[iu], (spk[:, None] == spk[None, :])[iu].astype(np.int64)


def speaker_eval(
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    corpus: Any,
    split: str = "test",
    n_per_speaker: int = 8,
    crop_s: float = 3.0,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, float]:
    """EER / minDCF of ``embed_fn`` (``wav[B,T] -> [B,D]``) on all pairs of crops of ``split``."""
    ids, crops, spk = eval_crops(corpus, split, n_per_speaker, crop_s, seed)
    if len(set(spk)) < 2:
        raise ValueError(f"speaker_eval needs >= 2 speakers in split {split!r}, found {len(set(spk))}")
    embs = []
    for i in range(0, len(ids), batch_size):
        wav = np.stack(
            [segment_of(corpus, u, a, b) for u, (a, b) in zip(ids[i : i + batch_size], crops[i : i + batch_size], strict=True)]
        )
        with torch.no_grad():
            embs.append(torch.as_tensor(embed_fn(torch.from_numpy(wav))).float().cpu())
    scores, labels = trial_scores(torch.cat(embs), spk)
    return {"eer": eer(scores, labels), "min_dcf": min_dcf(scores, labels), "n_trials": int(len(scores))}
