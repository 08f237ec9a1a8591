"""Speaker verification of a cell's teacher and student on the evaluation speakers."""

from __future__ import annotations

from typing import Any

import numpy as np

SPK_CROP_S = 1.0  # speaker-verification crops: about two refinement blocks
SPK_PER_SPEAKER = 8


def speaker_metrics(stages: Any, teacher: Any, corpus: Any, split: str | None, student: Any) -> dict[str, float]:
    """EER / minDCF of the teacher (and the student) on the speakers of ``split`` of ``corpus``,
    and their agreement. Crops of ``SPK_CROP_S`` seconds, ``SPK_PER_SPEAKER`` per speaker, all
    pairs scored. The crops are cut once and embedded once by the teacher (per grid) and once by
    each student (memoised on ``stages``): EER, minDCF and agreement share them."""
    import torch

    from bench.data.pieces import segment_of
    from bench.metrics.speaker import agreement, eval_crops

    def crops() -> tuple[Any, list[int]]:
        ids, spans, spk = eval_crops(corpus, split, SPK_PER_SPEAKER, SPK_CROP_S, 0)
        if len(set(spk)) < 2:
            raise ValueError(f"speaker metrics need >= 2 speakers in split {split!r}, found {len(set(spk))}")
        wav = np.stack([segment_of(corpus, u, a, b) for u, (a, b) in zip(ids, spans, strict=True)])
        return torch.from_numpy(wav), spk

    device = stages.device
    wav, spk = stages.memoised("spk_crops", f"{corpus.key}{split}", crops)
    t_emb = stages.memoised("spk", teacher.identity + corpus.key + str(split), lambda: _embed_batched(
        lambda w: teacher.embed(w.to(device)).float().cpu(), wav))
    out = _verification("teacher", t_emb, spk)
    if student is None:
        return out
    dev = next(student.parameters()).device

    def s_embed(w: Any) -> Any:
        return torch.nn.functional.normalize(student(w.to(dev)).float(), dim=-1).cpu()

    def make() -> dict[str, float]:  # a student serves several cells (one per alpha): score it once
        s_emb = _embed_batched(s_embed, wav)
        return {**_verification("student", s_emb, spk), "student_agreement": float(agreement(s_emb, t_emb))}

    out.update(stages.memoised("spk_student", f"{id(student)}{corpus.key}{split}", make))
    return out


def _embed_batched(fn: Any, wav: Any, batch: int = 32) -> Any:
    """``fn`` over the rows of ``wav`` in batches (no gradient), concatenated."""
    import torch

    with torch.no_grad():
        return torch.cat([torch.as_tensor(fn(wav[i : i + batch])).float().cpu() for i in range(0, len(wav), batch)])


def _verification(who: str, emb: Any, spk: list[int]) -> dict[str, float]:
    """``<who>_eer`` and ``<who>_min_dcf`` over every pair of rows of ``emb``."""
    from bench.metrics.speaker import eer, min_dcf, trial_scores

    scores, labels = trial_scores(emb, spk)
    return {f"{who}_eer": eer(scores, labels), f"{who}_min_dcf": min_dcf(scores, labels)}
