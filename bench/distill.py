"""Student distillation: train a tiny encoder to map short windows into the teacher's space.

``distill_student(cfg, corpus, teacher, cache, enhancer=None, device) -> (student, info)``

- **Pool**: a fixed, seeded pool of ``distill.window_s`` clean windows per train utterance
  (up to :data:`WINDOWS_PER_UTT`); their teacher embeddings are the targets, computed once
  through :class:`bench.teachers.emb_cache.EmbeddingCache` (persisted under the cache root).
- **Inputs** (``distill.inputs``): each batch is split evenly between the input kinds.
  ``clean`` = the pool window; ``noisy`` = that window mixed on the fly with interferers (other
  speakers' pool windows, SIR from ``mix.sir_db``) and noise (``mix.noise_types`` at
  ``mix.snr_db``) through :func:`bench.data.mix.compose`; ``enhanced`` = ``enhancer(noisy, e)``
  with ``e`` the teacher embedding of another window of the same speaker (only when an
  enhancer is given). The target is always the teacher embedding of the matching clean window.
- **Validation**: a fixed val-split set (clean + noisy [+ enhanced]) every ``distill.val_every``
  steps; early stopping after ``distill.patience`` evaluations without improvement of the val
  loss; the best weights are kept.
- **Resumable**: a checkpoint (model, optimiser, RNG states, early-stopping state) is written to
  the stage directory at every validation and picked up by the next call.
- **Loss space and output map**: with ``distill.centre`` the loss sees the targets minus the
  train pool's mean teacher embedding (centred InfoNCE, :func:`bench.losses.centre_targets`);
  after training, ``distill.align`` (``affine`` | ``orthogonal``) fits a map from the student's
  outputs on a fixed set of train windows to their teacher targets, or, with ``centre`` and no
  ``align``, the mean is restored (:mod:`bench.students.heads`). The map is stored with the
  student, so refiners and speaker metrics see teacher-space vectors.
- **Mechanism numbers** (the stage's info, on the validation windows, in teacher space): the
  agreement with the teacher, and the mean cosine of student and teacher embeddings to the
  teacher's mean direction (``val_mean_cos_student`` / ``val_mean_cos_teacher``): a student that
  drops the direction all teacher embeddings share shows it there.
- **Cached** in ``<cache>/student/<key>/`` (key: teacher identity, student and distill config as
  :func:`bench.losses.distill_slice` gives it, corpus key, mix config, seed, enhancer identity)
  with a ``DONE`` marker.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench import registry
from bench.audio import SR
from bench.cache import atomic_path, config_hash
from bench.data.steps import STUDENT_TAG, step_batches
from bench.losses import canonical_distill, centre_targets, distill_slice
from bench.metrics.speaker import agreement, crop_audio, utt_ids_of
from bench.runtime import autocast, backward_step, grad_scaler
from bench.students.heads import MappedStudent, fit_affine, fit_orthogonal, restore_map
from bench.teachers.emb_cache import EmbeddingCache
from bench.trainloop import (
    clone_state,
    note_validation,
    progress_bar,
    restore_rng,
    save_checkpoint,
    seed_everything,
    warmup_cosine,
)

STAGE = "student"
WINDOWS_PER_UTT = 6
VAL_WINDOWS_PER_UTT = 2
MAX_VAL = 384
MAX_FIT = 1024  # train windows the output map (distill.align) is fitted on


# Bump when the distillation code changes what a given config produces (the stage's cache key).
STAGE_VERSION = 1

def distill_key(cfg: Any, corpus: Any, teacher: Any, enhancer: Any = None, device: Any = "cpu") -> str:
    """Cache key of a student; the runtime's part (:func:`bench.runtime.key_extras`: device when not
    the CPU, AMP, the step-seeded loader) is empty on a CPU with the defaults, so old keys hold."""
    from bench.runtime import key_extras

    return config_hash(
        f"distill-v{STAGE_VERSION}", teacher.identity, cfg.student, distill_slice(cfg.distill), corpus.key, cfg.mix, cfg.seed, enhancer_identity(cfg, enhancer),
        *key_extras(device, getattr(cfg, "train", None)),
    )


def enhancer_identity(cfg: Any, enhancer: Any) -> str:
    if enhancer is None or "enhanced" not in cfg.distill.inputs:
        return ""
    return str(getattr(enhancer, "identity", type(enhancer).__qualname__))


# --------------------------------------------------------------------------- windows and mixing
def pool_seed(cfg: Any) -> int:
    """Seed of the distillation window pools: the corpus seed (shared by all student seeds)."""
    return int(cfg.corpus.seed)


def warm_targets(cfg: Any, corpus: Any, teacher: Any, cache: Any) -> int:
    """Compute (and cache) the teacher targets of the train and val window pools; returns their count.

    ``bench.run`` calls this once per teacher before distilling students in parallel workers,
    so the workers only read the embedding cache.
    """
    emb_cache = EmbeddingCache(cache, teacher, corpus.key)
    n = 0
    for split, per_utt, off in (("train", WINDOWS_PER_UTT, 0), ("val", VAL_WINDOWS_PER_UTT, 1)):
        ids, crops, _, _ = window_pool(corpus, split, cfg.distill.window_s, per_utt, pool_seed(cfg) + off)
        n += len(emb_cache.get_many(ids, crops, corpus.audio))
    return n


def window_pool(corpus: Any, split: str, window_s: float, per_utt: int, seed: int) -> tuple[list[str], list[tuple[int, int]], list[int], list[str]]:
    """Seeded windows ``(utt_ids, crops, speaker_idx, speakers)`` of ``split``."""
    rng = np.random.default_rng(seed)
    n = int(round(window_s * SR))
    ids, crops, spk = [], [], []
    speakers = sorted(corpus.speakers(split))
    for si, s in enumerate(speakers):
        for u in utt_ids_of(corpus, s, split):
            length = len(corpus.audio(u))
            k = max(1, min(per_utt, length // n))
            span = max(1, length - n + 1)
            for j in range(k):
                lo, hi = span * j // k, max(span * (j + 1) // k, span * j // k + 1)
                start = int(rng.integers(lo, hi))
                ids.append(u)
                crops.append((start, start + n))
                spk.append(si)
    return ids, crops, spk, speakers


class WindowMixer:
    """Noisy versions of pool windows (the clean window stays the reference).

    Mixed with the corpus' own mixing code (:func:`bench.data.mix.compose`,
    :func:`bench.data.conditions.sample_noise`) from the ``mix`` config, so students see the same
    interference and noise distribution as the backbone.
    """

    def __init__(self, corpus: Any, mix_cfg: Any, split: str, pool_ids: list[str], pool_crops: list[tuple[int, int]], pool_spk: list[int]) -> None:
        self.corpus, self.cfg, self.split = corpus, mix_cfg, split
        self.ids, self.crops, self.spk = pool_ids, pool_crops, np.asarray(pool_spk)

    def window(self, i: int) -> np.ndarray:
        a, b = self.crops[i]
        return crop_audio(self.corpus.audio(self.ids[i]), a, b)

    def noisy(self, i: int, rng: np.random.Generator) -> np.ndarray:
        from bench.data.conditions import sample_noise
        from bench.data.mix import compose
        from bench.data.mixture import INTERFERER_ONLY, NOISE_ONLY, draw_kind

        cfg = self.cfg
        clean = self.window(i)
        n = clean.shape[0]
        kind = draw_kind(cfg, rng)
        k = int(cfg.n_interferers[int(rng.integers(len(cfg.n_interferers)))]) if cfg.n_interferers else 0
        k = 0 if kind == NOISE_ONLY else k
        others = np.nonzero(self.spk != self.spk[i])[0]
        picks = rng.choice(others, size=min(k, len(others)), replace=False) if k and len(others) else []
        inters = [self.window(int(j)) for j in picks]
        sir = float(rng.uniform(*cfg.sir_db))
        snr = float(rng.uniform(*cfg.snr_db))
        noise = None
        if cfg.noise_types and kind != INTERFERER_ONLY:
            ntype = cfg.noise_types[int(rng.integers(len(cfg.noise_types)))]
            # babble never contains the target's own voice
            noise, _ = sample_noise(self.corpus, ntype, n, rng, {self.corpus.utt(self.ids[i]).speaker}, self.split)
        return compose(clean, inters, noise, sir, snr)[0]


def draw_inputs(idx: np.ndarray, inputs: list[str], rng: np.random.Generator, mixer: WindowMixer,
                by_spk: dict[int, list[int]], spk: list[int],
                emb_mix: float = 0.0) -> tuple[np.ndarray, list[int], list[int], list[tuple[int, float]]]:
    """The numpy part of a batch's inputs: ``(x [B, T], enh, enroll, mix)``; item ``j`` is of kind
    ``inputs[j % len(inputs)]``: its clean pool window, or that window mixed (``noisy``, and
    ``enhanced`` before the enhancer runs); ``enh`` lists the ``enhanced`` items, ``enroll`` the
    pool index of each one's enrollment window (same speaker). With ``emb_mix`` > 0
    (``distill.enh_emb_mix``), ``mix`` gives each enhanced item a window of another speaker and a
    weight ``U(0, emb_mix)`` toward whose embedding its enhancer embedding is moved (empty at 0).
    Draws from ``rng`` in item order (nothing more at ``emb_mix`` 0)."""
    kinds = [inputs[j % len(inputs)] for j in range(len(idx))]
    wavs = []
    for i, kind in zip(idx, kinds, strict=True):
        wavs.append(mixer.window(int(i)) if kind == "clean" else mixer.noisy(int(i), rng))
    enh = [j for j, k in enumerate(kinds) if k == "enhanced"]
    enroll = []
    for j in enh:
        same = by_spk[spk[int(idx[j])]]
        enroll.append(int(same[int(rng.integers(len(same)))]))
    mix: list[tuple[int, float]] = []
    if emb_mix > 0:
        for j in enh:
            others = [s for s in by_spk if s != spk[int(idx[j])]]
            if not others:
                mix.append((int(idx[j]), 0.0))
                continue
            pool = by_spk[others[int(rng.integers(len(others)))]]
            mix.append((int(pool[int(rng.integers(len(pool)))]), float(rng.uniform(0.0, emb_mix))))
    return np.stack(wavs), enh, enroll, mix


def finish_inputs(x: torch.Tensor, enh: list[int], enroll: list[int], enhancer: Any, pool_targets: torch.Tensor,
                  device: Any, mix: list[tuple[int, float]] | None = None) -> torch.Tensor:
    """``x`` (on ``device``) with its ``enh`` items replaced by ``enhancer(x[enh], e)``, ``e`` the
    teacher targets of the pool windows ``enroll``, each moved (``mix``, from :func:`draw_inputs`)
    to ``normalize((1 - w) e + w t)`` toward another speaker's target ``t``: enhanced speech made
    under a drifted embedding, as refinement makes it."""
    if enh:
        e = pool_targets[enroll].to(device)
        if mix:
            other = pool_targets[[i for i, _ in mix]].to(device)
            w = torch.tensor([w for _, w in mix], dtype=e.dtype, device=device)[:, None]
            e = torch.nn.functional.normalize((1 - w) * e + w * other, dim=-1)
        with torch.no_grad():
            out = enhancer(x[enh], e)
        x[enh] = out.to(x.dtype).reshape(len(enh), -1)[:, : x.shape[1]]
    return x


def _student_batch(n_pool: int, batch_size: int, inputs: list[str], mixer: WindowMixer, by_spk: dict[int, list[int]],
                   spk: list[int], emb_mix: float, rng: np.random.Generator) -> dict[str, Any]:
    """One training batch of the step-seeded loader (:mod:`bench.data.steps`), made in a worker:
    pool indices, their input audio and the enrollment (and embedding-mix) picks of the
    ``enhanced`` items."""
    idx = rng.choice(n_pool, size=batch_size, replace=n_pool < batch_size)
    x, enh, enroll, mix = draw_inputs(idx, inputs, rng, mixer, by_spk, spk, emb_mix)
    return {"idx": torch.from_numpy(idx), "x": torch.from_numpy(x), "enh": enh, "enroll": enroll, "mix": mix}


# --------------------------------------------------------------------------- main entry
def distill_student(cfg: Any, corpus: Any, teacher: Any, cache: Any, enhancer: Any = None, device: Any = "cpu", progress: bool = True,
                    on_validation: Callable[[int, dict[str, Any]], None] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Distil ``teacher`` into the configured student; see the module docstring. One trainer per
    stage across processes sharing the cache (a stage lock). ``on_validation(step, record)`` is
    called after every validation (once its checkpoint is written, so an exception it raises, a
    sweep pruning the trial say, leaves a stage the next call resumes); it changes nothing trained."""
    key = distill_key(cfg, corpus, teacher, enhancer, device)
    if not hasattr(cache, "lock"):
        return _distill_locked(cfg, corpus, teacher, cache, enhancer, device, progress, on_validation)
    with cache.lock(STAGE, key):
        return _distill_locked(cfg, corpus, teacher, cache, enhancer, device, progress, on_validation)


def _distill_locked(cfg: Any, corpus: Any, teacher: Any, cache: Any, enhancer: Any, device: Any,
                    progress: bool, on_validation: Callable[[int, dict[str, Any]], None] | None = None,
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    # the loss options its loss does not read are at their defaults, as in the key
    cfg = dataclasses.replace(cfg, distill=canonical_distill(cfg.distill))
    dc = cfg.distill
    device = torch.device(str(device))
    key = distill_key(cfg, corpus, teacher, enhancer, device)
    d = cache.stage_dir(STAGE, key)
    seed = int(cfg.seed)
    seed_everything(seed)
    student = registry.get("student", cfg.student.name)(cfg.student, teacher.dim).to(device)
    if not cache.is_done(STAGE, key) and getattr(dc, "source", "zoo") == "zoo":
        _from_zoo(cache, key)
    if cache.is_done(STAGE, key):
        if has_map(dc):
            student = MappedStudent(student, teacher.dim).to(device)
        student.load_state_dict(torch.load(d / "student.pt", map_location=device, weights_only=True))
        student.eval()
        info = cache.read_meta(STAGE, key)
        info["cached"] = True
        return student, info

    loss_fn = registry.get("loss", dc.loss)(dc)
    inputs = [k for k in dc.inputs if k != "enhanced" or enhancer is not None]
    if not inputs:
        inputs = ["clean"]
    t_start = time.time()
    emb_cache = EmbeddingCache(cache, teacher, corpus.key)
    pool = _train_pool(cfg, corpus, emb_cache, device)
    make_inputs = functools.partial(_make_inputs, inputs, enhancer, device, float(dc.enh_emb_mix))
    val = _val_set(cfg, corpus, emb_cache, make_inputs, device)
    _loss_targets(cfg, pool, val)
    run = _optimiser(cfg, student, device, d / "ckpt.pt")
    desc = f"distill {cfg.student.name}<-{teacher.name} ({dc.loss})"
    stopped_early = _train_loop(cfg, student, loss_fn, pool, make_inputs, val, run, enhancer, device,
                                inputs, progress, desc, on_validation)
    extra = {"key": key, "t_start": t_start, "stopped_early": stopped_early, "inputs": inputs,
             "make_inputs": make_inputs}
    return _finish(cfg, student, teacher, cache, pool, val, run, extra)


def _from_zoo(cache: Any, key: str) -> bool:
    """Put the student shipped in ``zoo/students/`` under ``key`` into the cache as if trained here
    (its info says where it came from); False when the zoo has none. A damaged file is an error."""
    import shutil

    from bench import zoo

    rec = zoo.find_student(key)
    if rec is None:
        return False
    src = zoo.student_file(rec)
    with atomic_path(cache.stage_dir(STAGE, key) / "student.pt") as tmp:
        shutil.copyfile(src, tmp)
    info = {**rec.get("info", {}), "source": f"zoo:{rec['sha256'][:16]}", "zoo_entry": rec["name"]}
    cache.mark_done(STAGE, key, info)
    return True


def has_map(dc: Any) -> bool:
    """Whether a student of these distill settings ends in an output map (``centre`` or ``align``)."""
    return bool(getattr(dc, "centre", False)) or getattr(dc, "align", "none") != "none"


def _loss_targets(cfg: Any, pool: dict[str, Any], val: dict[str, Any]) -> None:
    """Set the targets the loss sees (``loss_targets``), beside the teacher-space ``targets`` the
    enhanced inputs are made with: the targets minus the train pool's mean under ``centre``."""
    pool["mean"] = pool["targets"].mean(0)
    centre = bool(getattr(cfg.distill, "centre", False))
    for part in (pool, val):
        if "targets" in part:
            part["loss_targets"] = centre_targets(part["targets"], pool["mean"]) if centre else part["targets"]


def _train_pool(cfg: Any, corpus: Any, emb_cache: Any, device: Any) -> dict[str, Any]:
    """The train window pool with its teacher targets, speakers and mixer.

    The window pools (and so the teacher targets) depend on the corpus seed only: every student
    of a teacher shares one set of cached targets; the cell seed drives init and sampling."""
    ids, crops, spk, _ = window_pool(corpus, "train", cfg.distill.window_s, WINDOWS_PER_UTT, pool_seed(cfg))
    if len(set(spk)) < 2:
        raise ValueError(f"distillation needs >= 2 train speakers, found {len(set(spk))}")
    targets = emb_cache.get_many(ids, crops, corpus.audio).to(device)
    spk_t = torch.as_tensor(spk)
    mixer = WindowMixer(corpus, cfg.mix, "train", ids, crops, spk)
    by_spk: dict[int, list[int]] = {}
    for i, s in enumerate(spk):
        by_spk.setdefault(s, []).append(i)
    return {"ids": ids, "spk": spk, "targets": targets, "spk_t": spk_t, "mixer": mixer, "by_spk": by_spk}


def _make_inputs(inputs: list[str], enhancer: Any, device: Any, emb_mix: float, idx: np.ndarray,
                 rng: np.random.Generator, pool_mixer: WindowMixer, pool_targets: torch.Tensor,
                 pool_by_spk: dict[int, list[int]], pool_spk: list[int]) -> torch.Tensor:
    """A batch's inputs made here (on ``device``): :func:`draw_inputs`, then :func:`finish_inputs`."""
    x, enh, enroll, mix = draw_inputs(idx, inputs, rng, pool_mixer, pool_by_spk, pool_spk, emb_mix)
    return finish_inputs(torch.from_numpy(x).to(device), enh, enroll, enhancer, pool_targets, device, mix)


def _val_set(cfg: Any, corpus: Any, emb_cache: Any, make_inputs: Callable[..., torch.Tensor],
             device: Any) -> dict[str, Any]:
    """The fixed validation set: batches of (pool indices, inputs on the CPU), targets, speakers;
    ``have`` is False (and nothing else is set but ``n``) with fewer than two windows."""
    dc, seed = cfg.distill, int(cfg.seed)
    v_ids, v_crops, v_spk, _ = window_pool(corpus, "val", dc.window_s, VAL_WINDOWS_PER_UTT, pool_seed(cfg) + 1)
    if len(v_ids) < 2:
        return {"have": False, "n": len(v_ids)}
    if len(v_ids) > MAX_VAL:
        keep = np.sort(np.random.default_rng(seed + 2).choice(len(v_ids), MAX_VAL, replace=False))
        v_ids, v_crops, v_spk = [v_ids[i] for i in keep], [v_crops[i] for i in keep], [v_spk[i] for i in keep]
    v_targets = emb_cache.get_many(v_ids, v_crops, corpus.audio).to(device)
    v_mixer = WindowMixer(corpus, cfg.mix, "val", v_ids, v_crops, v_spk)
    v_by: dict[int, list[int]] = {}
    for i, s in enumerate(v_spk):
        v_by.setdefault(s, []).append(i)
    v_rng = np.random.default_rng(seed + 3)
    v_idx = np.random.default_rng(seed + 4).permutation(len(v_ids))
    v_batches = []
    bs = max(2, min(dc.batch_size, len(v_ids)))
    for a in range(0, len(v_idx) - 1, bs):
        b_idx = v_idx[a : a + bs]
        if len(b_idx) < 2:
            continue
        v_batches.append((b_idx, make_inputs(b_idx, v_rng, v_mixer, v_targets, v_by, v_spk).cpu()))
    return {"have": True, "n": len(v_ids), "targets": v_targets, "batches": v_batches,
            "spk_t": torch.as_tensor(v_spk)}


def _validate(student: torch.nn.Module, loss_fn: Any, val: dict[str, Any], device: Any) -> tuple[float, float]:
    """Validation loss and student-teacher agreement on the fixed validation set."""
    student.eval()
    losses, s_all, t_all = [], [], []
    with torch.no_grad():
        for b_idx, x in val["batches"]:
            s = student(x.to(device))
            t = val["loss_targets"][b_idx]
            losses.append(float(loss_fn(s, t, val["spk_t"][b_idx].to(device))) * len(b_idx))
            s_all.append(F.normalize(s, dim=-1).cpu())
            t_all.append(t.cpu())
    student.train()
    n = sum(len(b) for b, _ in val["batches"])
    return sum(losses) / n, agreement(torch.cat(s_all), torch.cat(t_all))


def _optimiser(cfg: Any, student: torch.nn.Module, device: Any, ckpt_path: Any) -> dict[str, Any]:
    """Optimiser, schedule (linear warm-up, cosine to 5 %), AMP scaler, sampling generator and
    loop state, resumed from ``ckpt_path`` when a checkpoint is there."""
    dc = cfg.distill
    opt = torch.optim.AdamW(student.parameters(), lr=dc.lr, weight_decay=dc.weight_decay)
    warm = min(dc.warmup_max, max(1, dc.steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, dc.steps, warm))
    scaler = grad_scaler(device, cfg.train)
    rng = np.random.default_rng(int(cfg.seed) + 5)
    run: dict[str, Any] = {
        "opt": opt, "sched": sched, "scaler": scaler, "rng": rng, "ckpt": ckpt_path, "resumed": False,
        "state": {"step": 0, "best": float("inf"), "best_agree": float("nan"), "best_step": 0, "bad": 0, "history": []},
        "best_state": clone_state(student),
    }
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        student.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        run["best_state"] = ck["best_state"]
        run["state"] = ck["state"]
        restore_rng(rng, ck["np_rng"], ck["torch_rng"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        run["resumed"] = True
    return run


def _checkpoint(student: torch.nn.Module, run: dict[str, Any]) -> None:
    scaler = run["scaler"]
    save_checkpoint(run["ckpt"], {
        "model": student.state_dict(), "opt": run["opt"].state_dict(), "sched": run["sched"].state_dict(),
        "best_state": run["best_state"], "state": run["state"], "np_rng": run["rng"].bit_generator.state,
        "torch_rng": torch.get_rng_state(), **({"scaler": scaler.state_dict()} if scaler is not None else {})})


def _after_validation(student: torch.nn.Module, loss_fn: Any, val: dict[str, Any], run: dict[str, Any],
                      train_losses: list[float], val_every: int, device: Any) -> None:
    """Validate, keep the best weights, update the early-stopping count, write the checkpoint."""
    state = run["state"]
    vl, va = _validate(student, loss_fn, val, device)
    state["history"].append({"step": state["step"], "val_loss": vl, "val_agreement": va, "train_loss": float(np.mean(train_losses[-val_every:]))})
    if note_validation(state, vl, higher_is_better=False, min_delta=1e-6):
        state["best_agree"] = va
        run["best_state"] = clone_state(student)
    _checkpoint(student, run)


def _train_loop(cfg: Any, student: torch.nn.Module, loss_fn: Any, pool: dict[str, Any],
                make_inputs: Callable[..., torch.Tensor], val: dict[str, Any], run: dict[str, Any], enhancer: Any,
                device: Any, inputs: list[str], progress: bool, desc: str,
                on_validation: Callable[[int, dict[str, Any]], None] | None) -> bool:
    """Train from ``run["state"]["step"]`` to ``distill.steps``; True when it stopped early."""
    dc, state, rng, targets = cfg.distill, run["state"], run["rng"], pool["targets"]
    n_pool = len(pool["ids"])
    student.train()
    bar = progress_bar(progress, dc.steps, desc, initial=state["step"])
    stopped_early = False
    train_losses: list[float] = []
    # train.loader_workers > 0: batches made in DataLoader workers, batch s from a generator seeded
    # by (seed, s) (the same for any number of workers); 0: here, from `rng` (the cached results)
    batches = (step_batches(functools.partial(_student_batch, n_pool, dc.batch_size, inputs, pool["mixer"], pool["by_spk"],
                                              pool["spk"], float(dc.enh_emb_mix)),
                            int(cfg.seed), STUDENT_TAG, state["step"], dc.steps, cfg.train.loader_workers,
                            pin_memory=device.type == "cuda") if cfg.train.loader_workers > 0 else None)
    while state["step"] < dc.steps:
        if batches is None:
            idx = rng.choice(n_pool, size=dc.batch_size, replace=n_pool < dc.batch_size)
            x = make_inputs(idx, rng, pool["mixer"], targets, pool["by_spk"], pool["spk"])
        else:
            b = next(batches)
            idx = b["idx"].numpy()
            x = finish_inputs(b["x"].to(device, non_blocking=True), b["enh"], b["enroll"], enhancer, targets, device,
                              b["mix"])
        with autocast(device, cfg.train):  # train.amp: CUDA only; the loss in float32
            s = student(x)
        loss = loss_fn(s.float(), pool["loss_targets"][idx], pool["spk_t"][idx].to(device))
        run["opt"].zero_grad()
        backward_step(loss, run["opt"], student.parameters(), run["scaler"], clip=float(dc.grad_clip))
        run["sched"].step()
        state["step"] += 1
        train_losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(train_losses[-20:]):.4f}")
        if val["have"] and (state["step"] % dc.val_every == 0 or state["step"] == dc.steps):
            _after_validation(student, loss_fn, val, run, train_losses, dc.val_every, device)
            if on_validation is not None:
                on_validation(state["step"], state["history"][-1])
            if state["bad"] >= dc.patience:
                stopped_early = True
                break
    if bar is not None:
        bar.close()
    if batches is not None:
        batches.close()  # stops the loader's workers
    return stopped_early


def _finish(cfg: Any, student: torch.nn.Module, teacher: Any, cache: Any, pool: dict[str, Any],
            val: dict[str, Any], run: dict[str, Any], extra: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Best weights into ``student`` (followed by its output map when it has one); write
    ``student.pt``, the stage's info and DONE marker."""
    state, key = run["state"], extra["key"]
    if val["have"]:
        student.load_state_dict(run["best_state"])
        val_loss, val_agree = state["best"], state["best_agree"]
    else:
        val_loss, val_agree = float("nan"), float("nan")
    student.eval()
    params = int(sum(p.numel() for p in student.parameters() if p.requires_grad))
    info: dict[str, Any] = {}
    if has_map(cfg.distill):
        student = _with_map(cfg, student, teacher.dim, pool, extra["make_inputs"])
        info = {"map": cfg.distill.align if cfg.distill.align != "none" else "restore",
                "map_size": student.map_size, "val_agreement_loss_space": val_agree}
    mech = _teacher_space(student, val, pool["mean"]) if val["have"] else {}
    if has_map(cfg.distill):
        val_agree = mech.get("agreement", val_agree)
    with atomic_path(cache.stage_dir(STAGE, key) / "student.pt") as tmp:
        torch.save(clone_state(student), tmp)
    info = {
        "key": key,
        "steps": state["step"],
        "best_step": state["best_step"],
        "stopped_early": extra["stopped_early"],
        "wall_s": time.time() - extra["t_start"],
        "val_loss": val_loss,
        "val_agreement": val_agree,
        "val_mean_cos_student": mech.get("mean_cos_student", float("nan")),
        "val_mean_cos_teacher": mech.get("mean_cos_teacher", float("nan")),
        "params": params,
        **info,
        "source": "trained",
        "teacher": teacher.identity,
        "loss": cfg.distill.loss,
        "inputs": extra["inputs"],
        "n_train_windows": len(pool["ids"]),
        "n_val_windows": val["n"],
        "resumed": run["resumed"],
        "history": state["history"],
    }
    cache.mark_done(STAGE, key, info)
    if run["ckpt"].exists():
        run["ckpt"].unlink()
    info["cached"] = False
    return student, info


def _student_outputs(student: torch.nn.Module, batches: list[tuple[Any, torch.Tensor]], device: Any) -> torch.Tensor:
    """``student``'s outputs ``[N, D]`` (float32, on the CPU) on input ``batches`` (eval mode, no grad)."""
    student.eval()
    with torch.no_grad():
        return torch.cat([student(x.to(device)).float().cpu() for _, x in batches])


def _with_map(cfg: Any, student: torch.nn.Module, dim: int, pool: dict[str, Any],
              make_inputs: Callable[..., torch.Tensor]) -> MappedStudent:
    """``student`` followed by the map ``distill.align`` fits on up to :data:`MAX_FIT` train windows
    (their inputs made as in training, from a fixed seed), or by centred InfoNCE's restoring map."""
    dc = cfg.distill
    mean = pool["mean"].float().cpu()
    mapped = MappedStudent(student, dim).to(pool["targets"].device)
    if dc.align == "none":  # centre alone: put the mean back
        w, b = restore_map(mean, pool["loss_targets"].cpu())
        mapped.map.set(w, b)
        return mapped.eval()
    n_pool = len(pool["ids"])
    rng = np.random.default_rng(int(cfg.seed) + 6)
    idx = np.sort(rng.choice(n_pool, size=min(MAX_FIT, n_pool), replace=False))
    batches = [(None, make_inputs(idx[a : a + dc.batch_size], rng, pool["mixer"], pool["targets"], pool["by_spk"],
                                  pool["spk"])) for a in range(0, len(idx), dc.batch_size)]
    s = _student_outputs(student, batches, pool["targets"].device)
    t = pool["targets"][idx].float().cpu()
    w, b = fit_affine(s, t) if dc.align == "affine" else fit_orthogonal(s, t)
    mapped.map.set(w, b)
    return mapped.eval()


def _teacher_space(student: torch.nn.Module, val: dict[str, Any], mean: torch.Tensor) -> dict[str, float]:
    """On the validation windows: agreement of the student (as refiners see it) with the teacher,
    and the mean cosine of student and teacher embeddings to the teacher's mean direction."""
    s = F.normalize(_student_outputs(student, val["batches"], val["targets"].device), dim=-1)
    t = torch.cat([val["targets"][b].float().cpu() for b, _ in val["batches"]])
    mu = F.normalize(mean.float().cpu(), dim=-1)
    return {"agreement": float(agreement(s, t)), "mean_cos_student": float((s @ mu).mean()),
            "mean_cos_teacher": float((F.normalize(t, dim=-1) @ mu).mean())}
