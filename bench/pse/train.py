"""Train a PSE backbone on on-the-fly mixtures, conditioned on cached teacher embeddings.

Stage ``pse`` of the pipeline: cached per (``cfg.pse``, teacher identity, corpus key,
``cfg.mix``) under ``<cache>/pse/<key>/``; resumable (checkpoint, optimizer and RNG state are
saved atomically at every validation and picked up on restart).

Loss: ``-SI-SDR + pse.spec_weight * multi-resolution compressed-magnitude L1`` on the output
shifted by the model's ``latency_samples`` (so it is compared to the time-aligned target).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.cache import Cache, atomic_path, atomic_write_json, config_hash, key_slice
from bench.config import PSE_ADDED_FIELDS, ExperimentConfig, PSEConfig
from bench.pse.base import PSEModel
from bench.trainloop import (
    clone_state,
    note_validation,
    progress_bar,
    restore_rng,
    rng_state,
    save_checkpoint,
    seed_everything,
    warmup_cosine,
)

log = logging.getLogger("bench")

STAGE = "pse"
DEFAULT_FFTS = (512, 256, 1024)
GAIN_DB = 10.0  # random level augmentation, +- dB
VAL_MIN = 32  # at least this many fixed validation mixtures
VAL_SEED_OFFSET = 7919


# --------------------------------------------------------------------------- losses
def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-item SI-SDR in dB: ``est [B, T]``, ``ref [B, T]`` -> ``[B]``: the differentiable batch
    twin of :func:`bench.metrics.quality.si_sdr` (the one every reported number uses), for the
    training loss and checkpoint selection; the two agree to float32 precision (tested, as both
    agree with torchmetrics')."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    a = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    s = a * ref
    return 10 * torch.log10((s.pow(2).sum(-1) + eps) / ((s - est).pow(2).sum(-1) + eps))


def multires_mag_loss(
    est: torch.Tensor, ref: torch.Tensor, ffts: tuple[int, ...] | list[int] = DEFAULT_FFTS
) -> torch.Tensor:
    """Mean L1 of |STFT|^0.3 over the FFT sizes ``ffts`` (hop = n_fft / 4); both signals scaled
    by ``ref``'s RMS. ``[B,T]`` -> scalar."""
    scale = ref.pow(2).mean(-1, keepdim=True).add(1e-8).sqrt()
    est, ref = est / scale, ref / scale
    total = est.new_zeros(())
    for n_fft in ffts:
        n_fft = int(n_fft)
        win = torch.hann_window(n_fft, device=est.device, dtype=est.dtype)
        se = torch.stft(est, n_fft, n_fft // 4, window=win, return_complex=True).abs()
        sr = torch.stft(ref, n_fft, n_fft // 4, window=win, return_complex=True).abs()
        total = total + (se.add(1e-8).pow(0.3) - sr.add(1e-8).pow(0.3)).abs().mean()
    return total / len(ffts)


def pse_loss(
    enhanced: torch.Tensor,
    target: torch.Tensor,
    latency: int,
    ffts: tuple[int, ...] | list[int] = DEFAULT_FFTS,
    spec_weight: float = 10.0,
) -> torch.Tensor:
    """Training loss on latency-aligned signals: ``enhanced [B,T]``, ``target [B,T]`` -> scalar:
    ``-SI-SDR (dB) + spec_weight * multires_mag_loss`` (the spectral term is skipped at weight 0)."""
    est, ref = _align(enhanced, target, latency)
    loss = -si_sdr(est, ref).mean()
    if spec_weight:
        loss = loss + spec_weight * multires_mag_loss(est, ref, ffts)
    return loss


def lr_at(step: int, pc: Any) -> float:
    """Learning rate for optimizer step ``step`` (0-based) under ``pc.lr_schedule``.

    ``constant``: ``pc.lr``. ``cosine``: linear warm-up from ``lr / warmup`` to ``lr`` over
    ``pc.warmup_steps``, then cosine decay to ``FINAL_LR_FRAC * lr`` at ``pc.train_steps``.
    A pure function of the step, so a resumed run follows the same schedule.
    """
    lr = float(pc.lr)
    if pc.lr_schedule == "constant":
        return lr
    return warmup_cosine(step, int(pc.train_steps), int(pc.warmup_steps), peak=lr)


def _align(enhanced: torch.Tensor, target: torch.Tensor, latency: int) -> tuple[torch.Tensor, torch.Tensor]:
    if latency <= 0:
        return enhanced, target
    return enhanced[:, latency:], target[:, : target.shape[1] - latency]


# --------------------------------------------------------------------------- plumbing
def _make_sampler(corpus: Any, split: str, mix_cfg: Any, seed: int) -> Any:
    """``bench.data.mix.MixtureSampler`` (a seam tests replace with a fake sampler)."""
    from bench.data.mix import MixtureSampler

    return MixtureSampler(corpus, split, mix_cfg, seed)


# Bump when the training code changes what a given config produces (the stage's cache key).
STAGE_VERSION = 2
# PSEConfig fields that say where weights come from or how they are used at inference, not how
# they are trained
_SOURCE_FIELDS = ("source", "path", "atten_lim_db")


# PSEConfig fields about the embedding, meaningless for a non-personalized backbone
_EMBEDDING_FIELDS = ("emb_degraded", "emb_mix", "emb_mix_max", "emb_drop", "refine_train", "refine_alpha_max")
_INJECTION_DEFAULT = PSEConfig.injection


def training_slice(pc: Any) -> dict[str, Any]:
    """The part of ``cfg.pse`` that shapes trained weights: everything but ``source``, ``path`` and
    the inference-time ``atten_lim_db``, for a non-personalized backbone nothing about the embedding
    either, and fields added later only away from their defaults (:func:`bench.cache.key_slice`)."""
    skip = _SOURCE_FIELDS + (() if pc.personalized else _EMBEDDING_FIELDS)
    out = key_slice(pc, PSE_ADDED_FIELDS, skip)
    if not pc.personalized and "injection" in out:
        # a non-personalized backbone has no injection point: any value builds and trains the same
        # weights, so the key carries the default (the keys of shipped twins stay as they were)
        out["injection"] = _INJECTION_DEFAULT
    return out


def teacher_identity(cfg: ExperimentConfig, teacher: Any) -> str:
    """The teacher a backbone depends on: its identity when personalized, else ``"none"`` (what the
    stage key, the training record and the zoo entries hold)."""
    return teacher.identity if (cfg.pse.personalized and teacher is not None) else "none"


def stage_key(cfg: ExperimentConfig, corpus: Any, teacher: Any, device: Any = "cpu") -> str:
    """Cache key of the PSE stage: (code version, pse training config, teacher identity, corpus
    key, mix config, validation size) and what the runtime changes in the weights
    (:func:`bench.runtime.key_extras`: the device when not the CPU, AMP, the step-seeded loader;
    nothing on a CPU with the defaults, so the keys of the zoo and of existing caches hold)."""
    from bench.runtime import key_extras

    return config_hash(STAGE_VERSION, training_slice(cfg.pse), teacher_identity(cfg, teacher), getattr(corpus, "key", ""),
                       cfg.mix, max(int(cfg.eval.n_val), VAL_MIN), *key_extras(device, getattr(cfg, "train", None)))


def build_model(cfg: ExperimentConfig, teacher: Any) -> PSEModel:
    """Instantiate ``cfg.pse.name`` for the teacher's embedding size."""
    from bench import registry

    emb_dim = int(teacher.dim) if (cfg.pse.personalized and teacher is not None) else 0
    return registry.get("pse", cfg.pse.name)(cfg.pse, emb_dim)


def enrollment_embeddings(
    teacher: Any, corpus: Any, utt_ids: list[str], cache: Cache
) -> dict[str, torch.Tensor]:
    """Teacher embeddings ``{utt_id: [D]}`` of whole utterances (the enrollment lookup table).

    Read from / added to :class:`bench.teachers.emb_cache.EmbeddingCache` (crop ``full``);
    falls back to embedding directly when that module is unavailable.
    """
    ids = sorted(set(utt_ids))
    if not ids:
        return {}
    try:
        from bench.teachers.emb_cache import EmbeddingCache
    except ImportError:  # pragma: no cover - teachers package without the cache
        EmbeddingCache = None  # noqa: N806
    if EmbeddingCache is not None and hasattr(cache, "root"):
        ec = EmbeddingCache(cache, teacher, getattr(corpus, "key", ""))
        emb = ec.get_many(ids, None, corpus.audio)
    else:
        emb = torch.stack(
            [teacher.embed(torch.as_tensor(np.array(corpus.audio(u), dtype=np.float32))[None])[0] for u in ids]
        )
    return dict(zip(ids, emb.float().cpu(), strict=True))


def _batch_emb(
    batch: dict[str, Any], table: dict[str, torch.Tensor], teacher: Any
) -> torch.Tensor:
    """``[B, D]`` enrollment embeddings for a sampler batch (table lookup, teacher fallback)."""
    rows = []
    for i, uid in enumerate(batch["enroll_ids"]):
        e = table.get(uid)
        if e is None:
            e = teacher.embed(batch["enrollment"][i : i + 1].float())[0].float().cpu()
            table[uid] = e
        rows.append(e)
    return torch.stack(rows)


def _shipped(cfg: ExperimentConfig, teacher: Any, key: str, device: str,
             corpus_key: str) -> tuple[PSEModel, dict[str, Any]] | None:
    """The backbone from the zoo (``pse.source: zoo``, when an entry has this key) or from a
    user's checkpoint (``local``); None when it has to be trained (or read from the cache). On a
    zoo miss the warning names the entries of corpus ``corpus_key`` that a few overrides select."""
    from bench import zoo

    pc = cfg.pse
    if pc.source == "train":
        return None
    if pc.source == "local":
        state, source, info = zoo.load_local(pc.path), f"local:{pc.path}", {}
    else:
        rec = zoo.find(key)
        if rec is None:
            near = zoo.nearest(training_slice(pc), teacher_identity(cfg, teacher), corpus_key)
            log.warning("no zoo entry for backbone %s (%s/%s, %s, key %s): training it here (pse.source=zoo falls "
                        "back to training; the zoo was built for another corpus or training config)%s",
                        zoo.entry_name(cfg, key), pc.name, pc.size, "personalized" if pc.personalized else
                        "non-personalized", key, zoo.describe_nearest(near))
            return None
        state = zoo.load_state(rec)
        source = f"zoo:{rec['file']}@{rec['sha256'][:12]}"
        info = {k: rec.get(k) for k in ("steps", "best_step", "best_val_si_sdri", "params")}
        info["wall_s"] = rec.get("train_wall_s")
    model = build_model(cfg, teacher)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise zoo.ZooError(f"checkpoint {source} does not fit pse {pc.name}/{pc.size} "
                           f"({'personalized' if pc.personalized else 'non-personalized'}): {exc}") from None
    model.to(device).eval()
    return model, {**info, "key": key, "pse": pc.name, "size": pc.size, "personalized": pc.personalized,
                   "cached": True, "pse_source": source}


def _augmenter(cfg: ExperimentConfig, corpus: Any, teacher: Any, cache: Cache, table: dict[str, torch.Tensor],
               train_ids: list[str], progress: bool) -> Any:
    """The embedding augmenter of ``cfg.pse`` (None when every ``emb_*`` switch is off)."""
    from bench.pse.embaug import EmbeddingAugmenter, degraded_pool

    pc = cfg.pse
    if not (pc.emb_degraded or pc.emb_mix or pc.emb_drop):
        return None
    pool = degraded_pool(teacher, corpus, train_ids, cache, cfg.mix.enroll_s, progress) if pc.emb_degraded else None
    speaker_of = {u.utt_id: u.speaker for u in corpus.utterances}
    return EmbeddingAugmenter(pc, table, speaker_of, pool)


def _val_set(cfg: ExperimentConfig, corpus: Any, teacher: Any, personalized: bool) -> dict[str, Any]:
    sampler = _make_sampler(corpus, "val", cfg.mix, cfg.pse.seed + VAL_SEED_OFFSET)
    rng = np.random.default_rng(cfg.pse.seed + VAL_SEED_OFFSET)
    n = max(int(cfg.eval.n_val), VAL_MIN)
    seg = max(float(cfg.pse.segment_s), 3.0)
    b = sampler.batch(rng, n, seg)
    out = {"mixture": b["mixture"].float(), "target": b["target"].float(), "emb": None}
    if personalized:
        out["emb"] = teacher.embed(b["enrollment"].float()).float().cpu()
    return out


@torch.no_grad()
def evaluate_si_sdri(model: PSEModel, val: dict[str, Any], device: str, chunk: int = 16) -> float:
    """Mean SI-SDR improvement (dB) of ``model`` over the mixture on a fixed validation set."""
    model.eval()
    lat = model.latency_samples
    gains = []
    for i in range(0, val["mixture"].shape[0], chunk):
        mix = val["mixture"][i : i + chunk].to(device)
        tgt = val["target"][i : i + chunk].to(device)
        emb = val["emb"][i : i + chunk].to(device) if val["emb"] is not None else None
        enh = model(mix, emb)
        est, ref = _align(enh, tgt, lat)
        base = si_sdr(mix[:, : ref.shape[1]], ref)
        gains.append((si_sdr(est, ref) - base).cpu())
    model.train()
    return float(torch.cat(gains).mean())


def _pse_batch(sampler: Any, batch_size: int, segment_s: float, rng: np.random.Generator) -> dict[str, Any]:
    """One training batch from ``rng``: mixtures and targets at a random level (+- GAIN_DB), the
    enrollment utterance ids and audio (the teacher fallback of :func:`_batch_emb`)."""
    b = sampler.batch(rng, batch_size, segment_s)
    mix, tgt = b["mixture"].float(), b["target"].float()
    gain = torch.as_tensor(
        10 ** (rng.uniform(-GAIN_DB, GAIN_DB, size=(mix.shape[0], 1)) / 20), dtype=mix.dtype
    )
    return {"mixture": mix * gain, "target": tgt * gain, "enrollment": b["enrollment"],
            "enroll_ids": list(b["enroll_ids"])}


def _batches(cfg: ExperimentConfig, sampler: Any, rng: np.random.Generator, start: int,
             device: str) -> Iterator[dict[str, Any]]:
    """Training batches from step ``start`` on. ``train.loader_workers = 0``: made here, from the
    run's one sequential generator ``rng`` (drawn lazily, in the order the cached results were);
    otherwise in DataLoader workers, batch ``s`` from a generator seeded by ``(pse.seed, s)``
    (:mod:`bench.data.steps`: the same batches for any number of workers)."""
    from bench.data.steps import PSE_TAG, step_batches
    from bench.runtime import device_type

    pc, workers = cfg.pse, int(cfg.train.loader_workers)
    make = functools.partial(_pse_batch, sampler, pc.batch_size, pc.segment_s)
    if workers <= 0:
        while True:
            yield make(rng)
    yield from step_batches(make, pc.seed, PSE_TAG, start, pc.train_steps, workers,
                            pin_memory=device_type(device) == "cuda")


def _train_step(model: PSEModel, opt: torch.optim.Optimizer, scaler: Any, b: dict[str, Any], step: int,
                ctx: dict[str, Any], rng: np.random.Generator) -> torch.Tensor:
    """One optimiser step on batch ``b``; ``ctx``: cfg, device, teacher, table, augment. The model's
    forward pass runs under ``train.amp``'s autocast (CUDA), the loss in float32."""
    from bench.runtime import autocast, backward_step, device_type

    cfg, device, teacher = ctx["cfg"], ctx["device"], ctx["teacher"]
    pc, lat = cfg.pse, model.latency_samples
    personalized = bool(pc.personalized)
    nb = device_type(device) == "cuda"
    mix, tgt = b["mixture"].to(device, non_blocking=nb), b["target"].to(device, non_blocking=nb)
    emb = _batch_emb(b, ctx["table"], teacher).to(device) if personalized else None
    if ctx["augment"] is not None:
        emb = ctx["augment"](emb, b["enroll_ids"], rng)
    if personalized and pc.refine_train and rng.random() < pc.refine_train:
        from bench.pse.embaug import refine_embedding

        emb = refine_embedding(model, teacher, mix, emb, lat, pc.refine_alpha_max, rng)
    with autocast(device, cfg.train):
        enhanced = model(mix, emb)
    loss = pse_loss(enhanced.float(), tgt, lat, pc.spec_ffts, pc.spec_weight)
    for group in opt.param_groups:
        group["lr"] = lr_at(step, pc)
    opt.zero_grad(set_to_none=True)
    backward_step(loss, opt, model.parameters(), scaler, clip=float(cfg.pse.grad_clip))
    return loss


# --------------------------------------------------------------------------- training
def train_pse(
    cfg: ExperimentConfig,
    corpus: Any,
    teacher: Any,
    cache: Cache,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[PSEModel, dict[str, Any]]:
    """Train (or load from cache) the PSE backbone of ``cfg.pse``.

    Args:
        cfg: experiment config; reads ``pse``, ``mix``, ``eval.n_val``, ``train``.
        corpus: :class:`bench.data.corpus.Corpus` (train and val splits are used).
        teacher: :class:`bench.teachers.base.Teacher` (may be None when not personalized).
        cache: artifact cache; the stage lives in ``<cache>/pse/<key>/``.
        device: torch device string (the stage key carries it when it is not the CPU).
        progress: show a tqdm bar.
        stop_after: stop (without finishing the stage) once this many steps are done in
            total — simulates an interruption; the next call resumes from the checkpoint.

    Returns:
        ``(model, info)``; the model (eval mode, best validation weights) maps
        ``mixture [B, T]``, ``emb [B, D]`` -> ``enhanced [B, T]``; ``info`` has ``steps``,
        ``wall_s``, ``best_val_si_sdri``, ``best_step``, ``params``, ``history``, ``key``.
    """
    personalized = bool(cfg.pse.personalized)
    if personalized and teacher is None:
        raise ValueError("pse.personalized=true needs a teacher for the enrollment embeddings")
    key = stage_key(cfg, corpus, teacher, device)
    # the zoo holds weights; where they run does not change them: looked up by the device-free key
    shipped = _shipped(cfg, teacher, stage_key(cfg, corpus, teacher), device, getattr(corpus, "key", ""))
    if shipped is not None:
        return shipped
    # one trainer per stage, also across processes sharing the cache: a second one waits, then loads
    with cache.lock(STAGE, key):
        return _train_locked(cfg, corpus, teacher, cache, key, device, progress, stop_after)


def _load_done(cfg: ExperimentConfig, teacher: Any, cache: Cache, key: str,
               device: str) -> tuple[PSEModel, dict[str, Any]] | None:
    """The finished stage from the cache, or None."""
    d = cache.stage_dir(STAGE, key)
    if not (cache.is_done(STAGE, key) and (d / "model.pt").exists()):
        return None
    model = build_model(cfg, teacher).to(device)
    model.load_state_dict(torch.load(d / "model.pt", map_location=device))
    model.eval()
    info = json.loads((d / "info.json").read_text())
    info["cached"] = True
    info.setdefault("pse_source", "trained")
    return model, info


def _resume(ckpt: Path, model: PSEModel, opt: torch.optim.Optimizer, scaler: Any, rng: np.random.Generator,
            st: dict[str, Any], device: str) -> bool:
    """Load the checkpoint into ``model``, ``opt``, ``scaler``, ``rng`` and the loop state ``st``."""
    if not ckpt.exists():
        return False
    ck = torch.load(ckpt, map_location=device, weights_only=False)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optim"])
    if scaler is not None and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    st.update({k: ck[k] for k in ("best_state", "step", "best", "best_step", "bad", "history")})
    st["wall_prev"] = ck["wall_s"]
    restore_rng(rng, ck["rng"]["numpy"], ck["rng"]["torch"])
    return True


def _validate(model: PSEModel, opt: torch.optim.Optimizer, scaler: Any, rng: np.random.Generator,
              st: dict[str, Any], loss: torch.Tensor, ctx: dict[str, Any], ckpt: Path) -> None:
    """Score the validation set, keep the best weights, write the checkpoint."""
    score = evaluate_si_sdri(model, ctx["val"], ctx["device"])
    st["history"].append({"step": st["step"], "val_si_sdri": score, "loss": float(loss.item())})
    if note_validation(st, score, higher_is_better=True):
        st["best_state"] = clone_state(model)
    obj = {"model": model.state_dict(), "optim": opt.state_dict(), "best_state": st["best_state"],
           "step": st["step"], "best": st["best"], "best_step": st["best_step"], "bad": st["bad"],
           "history": st["history"], "wall_s": st["wall_prev"] + time.time() - ctx["t_run"],
           "rng": rng_state(rng)}
    if scaler is not None:
        obj["scaler"] = scaler.state_dict()
    save_checkpoint(ckpt, obj)


def _prepare(cfg: ExperimentConfig, corpus: Any, teacher: Any, cache: Cache, device: str,
             progress: bool) -> dict[str, Any]:
    """What the loop needs besides the model: enrollment table, augmenter, validation set."""
    personalized = bool(cfg.pse.personalized)
    t_start = time.time()
    ctx: dict[str, Any] = {"cfg": cfg, "device": device, "teacher": teacher, "table": {}, "augment": None}
    if personalized:
        train_ids = [u.utt_id for u in corpus.utterances if getattr(u, "split", "train") == "train"]
        ctx["table"] = enrollment_embeddings(teacher, corpus, train_ids, cache)
        ctx["augment"] = _augmenter(cfg, corpus, teacher, cache, ctx["table"], train_ids, progress)
    ctx["val"] = _val_set(cfg, corpus, teacher, personalized)
    ctx["t_prep"] = time.time() - t_start
    return ctx


def _train_locked(cfg: ExperimentConfig, corpus: Any, teacher: Any, cache: Cache, key: str, device: str,
                  progress: bool, stop_after: int | None) -> tuple[PSEModel, dict[str, Any]]:
    """The body of :func:`train_pse` once the stage's lock is held: load it if done, else train."""
    from bench.runtime import grad_scaler

    done = _load_done(cfg, teacher, cache, key, device)
    if done is not None:
        return done
    pc = cfg.pse
    seed_everything(pc.seed)
    model = build_model(cfg, teacher).to(device)  # seeded init
    opt = torch.optim.Adam(model.parameters(), lr=pc.lr)
    scaler = grad_scaler(device, cfg.train)
    rng = np.random.default_rng(pc.seed)
    sampler = _make_sampler(corpus, "train", cfg.mix, pc.seed)
    ctx = _prepare(cfg, corpus, teacher, cache, device, progress)
    st: dict[str, Any] = {"step": 0, "best": -float("inf"), "best_step": 0, "bad": 0, "history": [],
                          "wall_prev": 0.0, "best_state": clone_state(model)}
    ckpt = cache.stage_dir(STAGE, key) / "ckpt.pt"
    resumed = _resume(ckpt, model, opt, scaler, rng, st, device)

    bar = progress_bar(progress, pc.train_steps, f"pse {key[:8]}", initial=st["step"])
    ctx["t_run"] = time.time()
    model.train()
    batches = _batches(cfg, sampler, rng, st["step"], device)
    try:
        while st["step"] < pc.train_steps and st["bad"] < pc.patience:
            if stop_after is not None and st["step"] >= stop_after:
                break
            loss = _train_step(model, opt, scaler, next(batches), st["step"], ctx, rng)
            st["step"] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.2f}", best=f"{st['best']:.2f}")
            if st["step"] % pc.val_every == 0 or st["step"] == pc.train_steps:
                _validate(model, opt, scaler, rng, st, loss, ctx, ckpt)
    finally:
        batches.close()  # stops the loader's workers
        if bar is not None:
            bar.close()
    wall = st["wall_prev"] + time.time() - ctx["t_run"]
    if stop_after is not None and st["step"] < pc.train_steps and st["bad"] < pc.patience:
        model.eval()
        return model, {"steps": st["step"], "wall_s": wall, "key": key, "interrupted": True}
    return _finish(cfg, model, teacher, cache, key, st, ctx, wall, resumed)


def _finish(cfg: ExperimentConfig, model: PSEModel, teacher: Any, cache: Cache, key: str, st: dict[str, Any],
            ctx: dict[str, Any], wall: float, resumed: bool) -> tuple[PSEModel, dict[str, Any]]:
    """Best weights into ``model``; write ``model.pt``, ``info.json`` and the DONE marker."""
    pc = cfg.pse
    personalized = bool(pc.personalized)
    stopped_early = st["bad"] >= pc.patience and st["step"] < pc.train_steps
    if not st["history"]:  # train_steps == 0
        st["best"] = evaluate_si_sdri(model, ctx["val"], ctx["device"])
        st["best_state"] = clone_state(model)
    model.load_state_dict(st["best_state"])
    model.eval()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info: dict[str, Any] = {
        "key": key,
        "pse": pc.name,
        "size": pc.size,
        "personalized": personalized,
        "injection": pc.injection,
        "teacher": teacher_identity(cfg, teacher),
        "steps": st["step"],
        "best_step": st["best_step"],
        "best_val_si_sdri": st["best"],
        "stopped_early": stopped_early,
        "wall_s": wall,
        "prep_s": ctx["t_prep"],
        "params": n_params,
        "history": st["history"],
        "resumed": resumed,
        "cached": False,
        "pse_source": "trained",
    }
    d = cache.stage_dir(STAGE, key)
    with atomic_path(d / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    atomic_write_json(d / "info.json", info)
    cache.mark_done(STAGE, key, {k: v for k, v in info.items() if k != "history"})
    ckpt = d / "ckpt.pt"
    if ckpt.exists():
        ckpt.unlink()
    return model, info
