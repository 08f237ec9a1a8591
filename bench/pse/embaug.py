"""Embedding augmentation: train a backbone that copes with a moving or imperfect embedding.

A backbone trained only with clean-enrollment embeddings falls below the non-personalized model
when its embedding is bad, and has never seen the embeddings a refiner produces. The switches of
:class:`bench.config.PSEConfig` replace a training example's enrollment embedding, each with its
own probability (applied in this order, so later ones act on the result of earlier ones):

* ``emb_degraded``: the teacher embedding of a *degraded* copy of the enrollment, drawn from a
  pool of ``N_VARIANTS`` variants per training utterance under the evaluation conditions
  :data:`DEGRADE_CONDITIONS` (made once per teacher and corpus, cached);
* ``emb_mix``: ``normalize((1 - w) e + w e_other)``, ``w ~ U(0, emb_mix_max)``, ``e_other`` the
  clean enrollment embedding of another training speaker;
* ``emb_drop``: the zero vector, which a personalized backbone reads as "no speaker
  information" (it then has to behave like the non-personalized model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.cache import Cache, atomic_path, config_hash

VERSION = 1
N_VARIANTS = 3
DEGRADE_CONDITIONS = ("noisy", "reverb", "bandlimited", "competing", "combined", "short")
POOL_SEED = 4177


def degraded_pool(teacher: Any, corpus: Any, utt_ids: list[str], cache: Cache, enroll_s: float,
                  progress: bool = False) -> dict[str, torch.Tensor]:
    """Teacher embeddings ``{utt_id: [N_VARIANTS, D]}`` of degraded enrollments (cached).

    Variant ``v`` of utterance ``u`` applies condition ``DEGRADE_CONDITIONS[(hash(u) + v) % 6]``
    to the enrollment crop of ``u`` (first ``enroll_s`` seconds), with other voices and babble from
    the training split only. Deterministic per (teacher, corpus, ids, ``enroll_s``).
    """
    from bench.data.conditions import apply_condition
    from bench.data.mix import enrollment_crop

    ids = sorted(set(utt_ids))
    key = config_hash("embaug", VERSION, teacher.identity, getattr(corpus, "key", ""), ids, enroll_s,
                      N_VARIANTS, DEGRADE_CONDITIONS)
    path = cache.stage_dir("embaug", key) / "pool.npz"
    if cache.is_done("embaug", key):
        with np.load(path) as z:
            emb = torch.from_numpy(z["emb"])
        return {u: emb[i] for i, u in enumerate(ids)}
    speaker = {u.utt_id: u.speaker for u in corpus.utterances}
    clips: list[np.ndarray] = []
    it = ids
    if progress:
        from tqdm import tqdm

        it = tqdm(ids, desc="degraded enrollments", unit="utt", leave=False)
    for i, uid in enumerate(it):
        src = corpus.audio(uid)
        clean = enrollment_crop(src, enroll_s)
        for v in range(N_VARIANTS):
            cond = DEGRADE_CONDITIONS[(i + v) % len(DEGRADE_CONDITIONS)]
            rng = np.random.default_rng([POOL_SEED, i, v])
            parts = {"speaker": speaker[uid], "target": clean, "enroll_source": src}
            res = apply_condition(cond, parts, rng, corpus, "train", enroll_s)
            clips.append(np.asarray(res["enrollment"], dtype=np.float32))
    emb = _embed_all(teacher, clips).reshape(len(ids), N_VARIANTS, -1)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, emb=emb.numpy())
    cache.mark_done("embaug", key, {"n": len(ids), "variants": N_VARIANTS})
    return {u: emb[i] for i, u in enumerate(ids)}


def _embed_all(teacher: Any, clips: list[np.ndarray], batch: int = 64) -> torch.Tensor:
    """Teacher embeddings ``[N, D]`` of clips of any lengths (batched among equal lengths)."""
    by_len: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
        by_len.setdefault(len(c), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(clips)
    with torch.no_grad():
        for idx in by_len.values():
            for j in range(0, len(idx), batch):
                part = idx[j : j + batch]
                e = teacher.embed(torch.from_numpy(np.stack([clips[i] for i in part]))).float().cpu()
                for i, row in zip(part, e, strict=True):
                    out[i] = row
    return torch.stack(out)  # type: ignore[arg-type]


class EmbeddingAugmenter:
    """Applies the ``pse.emb_*`` switches to a batch of clean enrollment embeddings.

    Args:
        pc: :class:`bench.config.PSEConfig` (reads ``emb_degraded``, ``emb_mix``, ``emb_mix_max``,
            ``emb_drop``).
        table: clean enrollment embeddings ``{utt_id: [D]}`` of the training utterances.
        speaker_of: ``{utt_id: speaker}``.
        pool: degraded variants ``{utt_id: [V, D]}`` (needed when ``emb_degraded > 0``).
    """

    def __init__(self, pc: Any, table: dict[str, torch.Tensor], speaker_of: dict[str, str],
                 pool: dict[str, torch.Tensor] | None = None) -> None:
        self.pc = pc
        self.table = table
        self.pool = pool or {}
        self.speaker_of = speaker_of
        self.ids = sorted(table)
        if pc.emb_degraded > 0 and not self.pool:
            raise ValueError("pse.emb_degraded > 0 needs the degraded-enrollment pool")

    @property
    def active(self) -> bool:
        pc = self.pc
        return bool(pc.emb_degraded or pc.emb_mix or pc.emb_drop)

    def __call__(self, emb: torch.Tensor, enroll_ids: list[str], rng: np.random.Generator) -> torch.Tensor:
        """``emb [B, D]`` (clean enrollment embeddings of ``enroll_ids``) -> augmented ``[B, D]``."""
        pc = self.pc
        out = emb.clone()
        b = out.shape[0]
        u = rng.random((b, 3))
        for i, uid in enumerate(enroll_ids):
            if u[i, 0] < pc.emb_degraded and uid in self.pool:
                variants = self.pool[uid]
                out[i] = variants[int(rng.integers(len(variants)))].to(out)
            if u[i, 1] < pc.emb_mix:
                other = self._other(uid, rng)
                w = float(rng.uniform(0.0, pc.emb_mix_max))
                out[i] = F.normalize((1.0 - w) * out[i] + w * self.table[other].to(out), dim=-1)
            if u[i, 2] < pc.emb_drop:
                out[i] = 0.0
        return out

    def _other(self, uid: str, rng: np.random.Generator) -> str:
        spk = self.speaker_of.get(uid)
        for _ in range(32):
            cand = self.ids[int(rng.integers(len(self.ids)))]
            if self.speaker_of.get(cand) != spk:
                return cand
        return cand


def refine_embedding(model: Any, teacher: Any, mix: torch.Tensor, emb: torch.Tensor, latency: int,
                     alpha_max: float, rng: np.random.Generator) -> torch.Tensor:
    """One step of the refinement loop, for training: ``emb`` moved toward the teacher embedding
    of the model's own (detached) output, at a rate ``U(0, alpha_max)`` drawn per example.

    Items whose embedding is zero (dropped) stay zero.
    """
    was = model.training
    model.eval()
    with torch.no_grad():
        y = model(mix, emb)[:, latency:]
        s = F.normalize(teacher.embed(y).float().to(emb), dim=-1)
    model.train(was)
    a = torch.as_tensor(rng.uniform(0.0, alpha_max, size=(emb.shape[0], 1)), dtype=emb.dtype, device=emb.device)
    moved = F.normalize((1.0 - a) * emb + a * s, dim=-1)
    keep = emb.abs().sum(-1, keepdim=True) == 0
    return torch.where(keep, emb, moved)
