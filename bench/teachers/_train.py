"""In-suite training of a teacher architecture (``teacher.source: trained``).

Speaker classification on the corpus train split with an additive-margin softmax head
(AM-softmax, ``s * (cos - m)`` on the target class), random crops, Adam. Validation EER on
the val split is reported in the teacher's ``weights_origin``. Each plugin saves the result
in its library's own checkpoint format under ``<cache>/teacher/<key>/`` and loads it back
through its ``local`` code path. A teacher shipped in ``zoo/teachers/`` under the same key
(``python -m bench.zoo add-teachers``) is copied into the cache instead of trained, unless
``teacher.train_source: train``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.audio import SR
from bench.cache import config_hash
from bench.config import TEACHER_ADDED_FIELDS
from bench.data.pieces import frames_of, segment_of
from bench.metrics.speaker import speaker_eval, utt_ids_of
from bench.runtime import backward_step
from bench.teachers import base
from bench.trainloop import progress_bar, seed_everything, warmup_cosine


class AMSoftmax(nn.Module):
    """Additive-margin softmax head: logits ``s * (cos(e, w_k) - m * [k == y])``."""

    def __init__(self, dim: int, n_classes: int, scale: float = 30.0, margin: float = 0.2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(emb, dim=-1) @ F.normalize(self.weight, dim=-1).T
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return F.cross_entropy(self.scale * (cos - self.margin * onehot), labels)


def trained_key(name: str, cfg: Any, corpus_key: str) -> str:
    """Cache key of an in-suite trained teacher (v2: the suite's shared warm-up + cosine schedule
    replaced one-cycle, and the optimisation settings joined the key)."""
    return config_hash("teacher-trained-v2", name, cfg.train_size, cfg.train_steps, corpus_key,
                       {k: getattr(cfg, k) for k in TEACHER_ADDED_FIELDS})


def trained_teacher(name: str, cfg: Any, cache: Any, corpus: Any, artifact: str, build: Callable[[Any], dict],
                    load: Callable[[Any], Any], presets: Any = None) -> Any:
    """The ``source=trained`` teacher ``name``: checked (``base.check_trainable``), keyed by
    :func:`trained_key`, built once by ``build(path)`` (trains, writes ``<stage dir>/<artifact>``,
    returns the training info) and loaded by ``load(path)``, with its provenance."""
    base.check_trainable(name, cfg, corpus, presets)
    key = trained_key(name, cfg, corpus.key)
    path = cache.stage_dir("teacher", key) / artifact
    zoo_ok = getattr(cfg, "train_source", "zoo") == "zoo"
    if not zoo_ok and cache.is_done("teacher", key) and _zoo_copy(cache.read_meta("teacher", key)):
        shutil.rmtree(path.parent)  # train_source=train: the cache's copy of the zoo's is trained again here
        path = cache.stage_dir("teacher", key) / artifact
    if not cache.is_done("teacher", key) and zoo_ok:
        from_zoo(cache, key, path)
    if not cache.is_done("teacher", key):
        cache.mark_done("teacher", key, build(path))
    info = cache.read_meta("teacher", key)
    t = load(path)
    shipped = f"; shipped in the zoo as teachers/{info['zoo_entry']}" if info.get("zoo_entry") else ""
    t.weights_origin = (base.trained_origin(name, cfg, corpus.key, info)
                        + f"{shipped} ({path}, sha256 {t.weights_hash})")
    t.info.update(info)
    return t


def _zoo_copy(info: dict[str, Any]) -> bool:
    """Whether a cached teacher's info says it was copied from the zoo."""
    return str(info.get("source", "")).startswith("zoo:")


def from_zoo(cache: Any, key: str, path: Path) -> bool:
    """Put the teacher shipped in ``zoo/teachers/`` under ``key`` at ``path`` (its stage
    artifact) as if trained here, its info saying where it came from; False when the zoo has none.
    A damaged entry is an error (:class:`bench.zoo.ZooError`), never silently used."""
    from bench import zoo

    rec = zoo.find_teacher(key)
    if rec is None:
        return False
    src = zoo.teacher_artifact(rec)
    tmp = path.with_name(f".{path.name}.zoo.tmp")
    for p in (tmp, path):  # a partial copy or an unfinished training of before
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    if src.is_dir():
        shutil.copytree(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, path)
    cache.mark_done("teacher", key, {**rec.get("info", {}), "source": f"zoo:{rec['sha256'][:16]}",
                                     "zoo_entry": rec["name"]})
    return True


def train_speaker_encoder(
    name: str,
    net: nn.Module,
    embed_train: Callable[[torch.Tensor], torch.Tensor],
    embed_eval: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    corpus: Any,
    cfg: Any,
    seed: int = 0,
    default_lr: float = 2e-3,
    extra_params: Iterable[nn.Parameter] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``net`` for ``cfg.train_steps`` AM-softmax steps (``cfg``: the
    :class:`bench.config.TeacherConfig`; its ``train_lr`` 0 means ``default_lr``, the plugin's own).

    AdamW at ``train_lr`` with ``train_weight_decay``, linear warm-up over a tenth of the steps and
    cosine decay (:func:`bench.trainloop.warmup_cosine`), gradients clipped at ``train_grad_clip``,
    batches of ``train_batch_size`` crops of ``train_crop_s`` seconds.

    Returns ``{steps, wall_s, train_loss, n_speakers, speakers, head_weight, val_eer}``
    (``head_weight``: the AM-softmax class weights ``[n_speakers, dim]``; pop it before
    writing the dict as JSON).

    ``embed_train(wav[B,T]) -> [B, dim]`` runs ``net`` in training mode with gradients;
    ``embed_eval`` is the teacher's inference path (used for the validation EER).
    """
    if corpus is None:
        raise ValueError(f"teacher {name!r}: source=trained needs a corpus (got None)")
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    speakers = sorted(corpus.speakers("train"))
    utts = {s: utt_ids_of(corpus, s, "train") for s in speakers}
    speakers = [s for s in speakers if utts[s]]
    if len(speakers) < 2:
        raise ValueError(f"teacher {name!r}: source=trained needs >= 2 train speakers, found {len(speakers)}")
    head = AMSoftmax(dim, len(speakers))
    params = list(net.parameters()) + list(head.parameters()) + list(extra_params)
    steps, crop_s, lr = int(cfg.train_steps), float(cfg.train_crop_s), float(cfg.train_lr) or default_lr
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=float(cfg.train_weight_decay))
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, steps, warm))
    n = int(crop_s * SR)
    t0 = time.time()
    losses: list[float] = []
    bar = progress_bar(progress, steps, f"train teacher {name}")
    net.train()
    for _ in range(steps):
        labels = rng.integers(0, len(speakers), int(cfg.train_batch_size))
        wav = _crop_batch(corpus, speakers, utts, labels, n, rng)
        loss = head(embed_train(wav), torch.as_tensor(labels))
        opt.zero_grad()
        backward_step(loss, opt, params, None, clip=float(cfg.train_grad_clip))
        sched.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    if bar is not None:
        bar.close()
    net.eval()
    info: dict[str, Any] = {
        "steps": steps,
        "wall_s": time.time() - t0,
        "train_loss": float(np.mean(losses[-20:])),
        "n_speakers": len(speakers),
        "speakers": speakers,
        "head_weight": head.weight.detach().clone(),
    }
    try:
        info["val_eer"] = speaker_eval(embed_eval, corpus, "val", n_per_speaker=6, crop_s=crop_s, seed=seed)["eer"]
    except ValueError as exc:  # too few val speakers
        info["val_eer"] = None
        info["val_error"] = str(exc)
    return info


def _crop_batch(corpus: Any, speakers: list[str], utts: dict[str, list[str]], labels: np.ndarray, n: int,
                rng: np.random.Generator) -> torch.Tensor:
    """Random ``n``-sample crops of a random utterance of each label's speaker, each at a random
    gain (+-10 dB), plus a little white noise."""
    wavs = []
    for k in labels:
        u = utts[speakers[k]][rng.integers(0, len(utts[speakers[k]]))]
        start = int(rng.integers(0, max(1, frames_of(corpus, u) - n + 1)))
        seg = segment_of(corpus, u, start, start + n) * float(10 ** rng.uniform(-0.5, 0.5))
        wavs.append(seg)
    wav = torch.from_numpy(np.stack(wavs))
    return wav + 1e-4 * torch.randn_like(wav)
