"""The staged pipeline behind ``bench.run``.

config -> corpus -> eval mixtures -> teacher (embeddings cached) -> PSE backbone (cached per
teacher) -> student (cached per teacher, loss, tau, seed) -> streaming evaluation (cached per
cell) -> per-utterance rows.

Every stage is memoised in memory for the run and cached on disk under ``bench.cache.Cache``
by the hash of the config slice it depends on, so cells sharing a stage compute it once and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.audio import SR
from bench.cache import Cache, atomic_path, config_hash, key_slice
from bench.config import (
    COMPETING_CONDITIONS,
    DISTILL_ADDED_FIELDS,
    STREAM_CONDITIONS,
    TEACHER_ADDED_FIELDS,
    ExperimentConfig,
)
from bench.refine import make_refiner, system_name, updates_embedding, uses_student
from bench.runtime import key_extras

log = logging.getLogger("bench")

# The evaluation mixtures do not depend on the cell's seed: every system and seed is scored on
# the same utterances, so differences are paired.
EVAL_SEED_OFFSET = 1000
# Bump a stage's version when its code changes what a given config produces (its cache key).
# eval 3: rtf is one stream's, per-block latency added; 4: SI-SDR with numpy's BLAS on one thread
STAGE_VERSION = {"evalset": 2, "eval": 4}
SPK_CROP_S = 1.0  # speaker-verification crops: about two refinement blocks
SPK_PER_SPEAKER = 8
EVAL_BATCH = 16
EMBED_BATCH = 16  # clips of equal length the teacher embeds at once
TIMED_S = 8.0  # seconds of one stream timed per cell (rtf, block latency)


def eval_split(cfg: ExperimentConfig) -> str | None:
    """The split the eval sets are drawn from (None: every speaker of the test corpus)."""
    return None if cfg.eval.split == "all" else cfg.eval.split


def n_items(cfg: ExperimentConfig, condition: str) -> int:
    """Test items of a condition: ``eval.n_stream`` streams or ``eval.n_test`` short mixtures."""
    return cfg.eval.n_stream if condition in STREAM_CONDITIONS else cfg.eval.n_test


def eval_slice(cfg: ExperimentConfig) -> dict[str, Any]:
    """The part of a cell's config its evaluation depends on (its cache key)."""
    from bench.pse.train import training_slice

    s: dict[str, Any] = {
        "v": STAGE_VERSION["eval"],
        "corpus": cfg.corpus,
        "test_corpus": cfg.test_corpus if cfg.test_corpus.name else "",
        "mix": cfg.mix,
        "eval": {k: v for k, v in vars(cfg.eval).items() if k not in ("workers",)},
        "teacher": key_slice(cfg.teacher, TEACHER_ADDED_FIELDS),
        "pse": training_slice(cfg.pse),
        "pse_source": [cfg.pse.source, cfg.pse.path],
    }
    if cfg.pse.atten_lim_db:  # inference-time; absent at 0 so that older keys hold
        s["pse_atten_lim_db"] = cfg.pse.atten_lim_db
    if cfg.pse.personalized:
        s["refine"] = _refine_slice(cfg) if updates_embedding(cfg) else {"name": cfg.refine.name}
    if uses_student(cfg):
        s["student"] = cfg.student
        s["distill"] = key_slice(cfg.distill, DISTILL_ADDED_FIELDS)
        s["seed"] = cfg.seed
    return s


def _limit_tag(cfg: ExperimentConfig) -> str:
    """What ``pse.atten_lim_db`` adds to a backbone's identity ("" when off, so older keys hold)."""
    return f"+lim{cfg.pse.atten_lim_db:g}dB" if cfg.pse.atten_lim_db else ""


def _refine_slice(cfg: ExperimentConfig) -> dict[str, Any]:
    """The refiner's settings a refining cell's evaluation depends on: ``student_mode`` only for
    refiners that use a student (a streaming student's control and ceiling are the window ones)."""
    out = dict(vars(cfg.refine))
    if not uses_student(cfg) or out.get("student_mode") == "window":
        out.pop("student_mode", None)
    return out


@dataclass
class CellResult:
    """Per-utterance rows of one cell plus its complexity and timing."""

    rows: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Runs stages with in-memory memoisation on top of the on-disk cache."""

    def __init__(self, cache: Cache, device: str = "cpu", progress: bool = True) -> None:
        self.cache = cache
        self.device = device
        self.progress = progress
        self._memo: dict[tuple[str, str], Any] = {}
        # called after each validation of a student trained here (a sweep's pruning; see distill_student)
        self.on_validation: Any = None

    def _memoised(self, stage: str, key: str, make):
        k = (stage, key)
        if k not in self._memo:
            self._memo[k] = make()
        return self._memo[k]

    # ------------------------------------------------------------------ stages
    def corpus(self, cfg: ExperimentConfig):
        """The training corpus, validated (``bench.data.validate``; CorpusError lists problems)."""
        from bench.data.corpus import load_corpus
        from bench.data.validate import validate

        splits = ("val",) if cfg.test_corpus.name else ("val", eval_split(cfg))
        return self._memoised("corpus", config_hash(cfg.corpus, splits), lambda: validate(
            load_corpus(cfg.corpus, self.cache), self.cache, "corpus", cfg.corpus.skip_bad, splits))

    def teacher(self, cfg: ExperimentConfig):
        from bench.teachers import load_teacher

        corpus = self.corpus(cfg)
        key = config_hash(cfg.teacher, corpus.key if cfg.teacher.source == "trained" else "")
        return self._memoised(
            "teacher", key, lambda: load_teacher(cfg.teacher, self.cache, corpus, self.device)
        )

    def test_corpus(self, cfg: ExperimentConfig):
        """The corpus the evaluation mixtures come from: ``test_corpus`` when one is named
        (cross-corpus evaluation), else the training corpus itself."""
        from bench.data.corpus import load_corpus
        from bench.data.validate import validate

        if not cfg.test_corpus.name:
            return self.corpus(cfg)
        return self._memoised("corpus", config_hash("test", cfg.test_corpus, cfg.eval.split), lambda: validate(
            load_corpus(cfg.test_corpus, self.cache), self.cache, "test_corpus", cfg.test_corpus.skip_bad,
            (eval_split(cfg),), train=False))

    def _evalset_key(self, cfg: ExperimentConfig, condition: str) -> str:
        """Content key of one condition's fixed test mixtures (everything they depend on)."""
        extra: list[Any] = [cfg.eval.competing_sir_db] if condition in COMPETING_CONDITIONS else []
        if condition in STREAM_CONDITIONS:
            extra.append(["stream", cfg.eval.stream_s, cfg.eval.stream_sir_db, cfg.eval.stream_snr_db])
        return config_hash(STAGE_VERSION["evalset"], self.test_corpus(cfg).key, cfg.mix, n_items(cfg, condition),
                           cfg.eval.test_s, condition, cfg.corpus.seed + EVAL_SEED_OFFSET, cfg.eval.split,
                           *extra)

    def eval_set(self, cfg: ExperimentConfig, condition: str) -> list:
        """Fixed test mixtures of one condition (cached on disk)."""
        from bench.data.mix import load_eval_set, make_eval_set, save_eval_set

        corpus = self.test_corpus(cfg)
        seed = cfg.corpus.seed + EVAL_SEED_OFFSET
        key = self._evalset_key(cfg, condition)

        def make():
            path = self.cache.stage_dir("evalset", key) / "set.npz"
            with self.cache.lock("evalset", key):
                return load_or_make(path)

        def load_or_make(path):
            if self.cache.is_done("evalset", key):
                return load_eval_set(path)
            mixtures = make_eval_set(corpus, eval_split(cfg), cfg.mix, condition, n_items(cfg, condition), seed,
                                     cfg.eval.test_s, cfg.eval.competing_sir_db, cfg.eval.stream_s,
                                     (cfg.eval.stream_sir_db, cfg.eval.stream_snr_db))
            save_eval_set(path, mixtures)
            self.cache.mark_done("evalset", key, {"condition": condition, "n": len(mixtures)})
            return mixtures

        return self._memoised("evalset", key, make)

    def pse(self, cfg: ExperimentConfig):
        from bench.pse.limit import with_limit
        from bench.pse.train import stage_key, train_pse

        teacher = self.teacher(cfg)
        corpus = self.corpus(cfg)
        key = stage_key(cfg, corpus, teacher, self.device)

        def make():
            model, info = train_pse(cfg, corpus, teacher, self.cache, device=self.device, progress=self.progress)
            model = with_limit(model, cfg.pse.atten_lim_db)
            model.eval()
            return model, info

        return self._memoised("pse", key + _limit_tag(cfg), make)

    def student(self, cfg: ExperimentConfig):
        from bench.distill import distill_key, distill_student
        from bench.pse.train import stage_key

        teacher = self.teacher(cfg)
        corpus = self.corpus(cfg)
        enhancer = None
        if "enhanced" in cfg.distill.inputs:
            pse_model, _ = self.pse(cfg)
            enhancer = _Enhancer(pse_model, identity=stage_key(cfg, corpus, teacher, self.device) + _limit_tag(cfg))
        key = distill_key(cfg, corpus, teacher, enhancer, self.device)

        def make():
            student, info = distill_student(cfg, corpus, teacher, self.cache, enhancer=enhancer, device=self.device,
                                            progress=self.progress, on_validation=self.on_validation)
            student.eval()
            return student, info

        return self._memoised("student", key, make)

    # ------------------------------------------------------------------ evaluation
    def weights_identity(self, cfg: ExperimentConfig) -> str:
        """What the backbone's weights are, for cache keys: the zoo entry's or the local file's
        SHA-256, or ``trained`` (the stage key then covers the training config)."""
        from bench import zoo
        from bench.pse.train import stage_key

        pc = cfg.pse
        if pc.source == "local":
            return "local:" + self._memoised("sha", pc.path, lambda: zoo.sha256(pc.path) if
                                             os.path.isfile(pc.path) else "missing")
        if pc.source == "zoo":
            rec = zoo.find(stage_key(cfg, self.corpus(cfg), self.teacher(cfg)))
            return f"zoo:{rec['sha256']}" if rec else "trained"
        return "trained"

    def evaluate(self, cfg: ExperimentConfig) -> CellResult:
        """Score one cell on every condition of ``cfg.eval.conditions`` (cached per cell)."""
        # the device (when not the CPU) and the training runtime (bench.runtime.key_extras): a cell
        # scored on a GPU, or with stages trained another way, is another result; nothing on a CPU
        # with the defaults, so cached cells stay valid
        key = config_hash(eval_slice(cfg), self.weights_identity(cfg), *key_extras(self.device, cfg.train))
        stage_dir = self.cache.stage_dir("eval", key)
        csv = stage_dir / "rows.csv"
        with self.cache.lock("eval", key):
            return self._evaluate_locked(cfg, key, csv)

    def _evaluate_locked(self, cfg: ExperimentConfig, key: str, csv) -> CellResult:
        if self.cache.is_done("eval", key):
            return CellResult(pd.read_csv(csv), self.cache.read_meta("eval", key))
        rows, info = self._evaluate(cfg)
        with atomic_path(csv) as tmp:
            rows.to_csv(tmp, index=False)
        info["eval_key"] = key
        self.cache.mark_done("eval", key, info)
        return CellResult(rows, info)

    def mixture_rows(self, cfg: ExperimentConfig) -> pd.DataFrame:
        """Metrics of the unprocessed mixture on every condition (cached)."""
        key = config_hash("mixture", STAGE_VERSION["eval"], self.test_corpus(cfg).key, cfg.mix, cfg.eval.n_test,
                          cfg.eval.n_stream,
                          cfg.eval.test_s, cfg.eval.stream_s, cfg.eval.stream_sir_db, cfg.eval.stream_snr_db,
                          cfg.eval.split, cfg.eval.conditions, cfg.eval.pesq, cfg.eval.competing_sir_db)
        csv = self.cache.stage_dir("eval", key) / "rows.csv"
        if self.cache.is_done("eval", key):
            return pd.read_csv(csv)
        sets = {cond: self.eval_set(cfg, cond) for cond in cfg.eval.conditions}
        outs = {cond: [m.mixture for m in ms] for cond, ms in sets.items()}
        rows = _score(cfg, sets, outs)
        with atomic_path(csv) as tmp:
            rows.to_csv(tmp, index=False)
        self.cache.mark_done("eval", key, {})
        return rows

    def _evaluate(self, cfg: ExperimentConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
        from bench.metrics.complexity import count_params

        teacher = self.teacher(cfg)
        model, pse_info = self.pse(cfg)
        student, student_info = self.student(cfg) if uses_student(cfg) else (None, {})
        refine_cfg = cfg.refine if cfg.pse.personalized else _static(cfg)
        refiner = make_refiner(refine_cfg, student, teacher)
        if refiner.needs_mean_embedding:
            refiner.bind(mean_embedding=self.mean_embedding(cfg))
        complexity = self.complexity(cfg, model, refiner, student, teacher)
        sets: dict[str, list] = {}
        outs: dict[str, list[np.ndarray]] = {}
        acc = _Accumulator()
        trajectories: dict[str, list[float]] = {}
        for cond in cfg.eval.conditions:
            sets[cond] = self.eval_set(cfg, cond)
            outs[cond], traj = self._stream_condition(cfg, cond, model, refiner, refine_cfg.block_s, acc)
            if traj is not None:
                trajectories[cond] = traj
        timing = self.stream_timing(cfg, model, refiner, refine_cfg.block_s)
        rows = _score(cfg, sets, outs, acc.columns())
        pse_params = count_params(model)
        info: dict[str, Any] = {
            "system": system_name(cfg),
            "wall_s": acc.wall,
            # throughput of the evaluation itself: batches of EVAL_BATCH streams, no warm-up
            "batch_rtf": acc.wall / acc.audio if acc.audio else float("nan"),
            **timing,
            "peak_mem_mb": acc.peak,
            "n_updates": acc.n_updates,
            "n_skipped": acc.n_skipped,
            "pse_params": pse_params["learnable"],
            "pse_buffers": pse_params["buffers"],
            "pse_train": _jsonable(pse_info),
            "student_train": _jsonable(student_info),
            "pse_source": pse_info.get("pse_source", "trained"),
            "teacher_identity": teacher.identity,
            "teacher_weights": teacher.weights_origin,
            "trajectory": trajectories,
            "block_s": float(acc.block_s),
            **self.speaker_metrics(cfg, student),
            **complexity,
        }
        return rows, info

    def stream_timing(self, cfg: ExperimentConfig, model, refiner, block_s: float) -> dict[str, float]:
        """Real-time cost of the cell: one stream (batch 1; the first ``TIMED_S`` seconds of the
        longest test items), streamed block by block with its refiner after a 1 s warm-up
        (:func:`bench.refine.time_streaming`): ``rtf`` (processing time / audio time),
        ``block_ms_p50`` / ``block_ms_p95`` (compute per block) and ``algo_latency_ms`` (block +
        the backbone's latency)."""
        import torch

        from bench.refine import time_streaming

        cond = max(cfg.eval.conditions, key=lambda c: len(self.eval_set(cfg, c)[0].mixture))
        m = self.eval_set(cfg, cond)[0]
        n = min(len(m.mixture), int(TIMED_S * SR))
        mix = torch.from_numpy(np.ascontiguousarray(m.mixture[None, :n])).to(self.device)
        e0 = None
        if cfg.pse.personalized:
            e0 = torch.from_numpy(self.start_embeddings(cfg, cond, refiner.start)[:1]).to(self.device)
        tgt = torch.from_numpy(np.ascontiguousarray(m.target[None, :n])) if refiner.needs_target else None
        t = time_streaming(model, mix, e0, refiner, block_s, target=tgt).as_dict()
        return {"rtf": t["rtf"], "block_ms_p50": t["block_ms_p50"], "block_ms_p95": t["block_ms_p95"],
                "algo_latency_ms": t["algo_latency_ms"], "timed_audio_s": t["audio_s"]}

    def _stream_condition(self, cfg: ExperimentConfig, cond: str, model, refiner, block_s: float,
                          acc: _Accumulator) -> tuple[list[np.ndarray], list[float] | None]:
        """Enhance one condition's mixtures block by block; record per-utterance speaker evidence
        in ``acc``. Returns the latency-aligned outputs and the per-block mean cosine of the
        embedding trajectory to the clean target's embedding (None without an embedding)."""
        import torch

        from bench.harness import measure
        from bench.refine import enhance_streaming

        teacher = self.teacher(cfg)
        mixtures = self.eval_set(cfg, cond)
        personalized = cfg.pse.personalized
        e0_all = self.start_embeddings(cfg, cond, refiner.start) if personalized else None
        tgt_all, late_all = self.target_embeddings(cfg, cond)
        lat = int(getattr(model, "latency_samples", 0))
        refining = refiner.updates_embedding and personalized
        enhanced: list[np.ndarray] = []
        block_cos: list[np.ndarray] = []
        for i in range(0, len(mixtures), EVAL_BATCH):
            chunk = mixtures[i : i + EVAL_BATCH]
            mix = torch.from_numpy(np.stack([m.mixture for m in chunk])).to(self.device)
            tgt = torch.from_numpy(np.stack([m.target for m in chunk])) if refiner.needs_target else None
            e0 = torch.from_numpy(e0_all[i : i + EVAL_BATCH]).to(self.device) if personalized else None
            with measure(self.device, audio_s=mix.numel() / SR) as t, torch.no_grad():
                res = enhance_streaming(model, mix, e0, refiner, block_s, target=tgt)
            acc.add_timing(t, res, refining, len(chunk))
            # The backbone's output lags its input by `latency_samples` (overlap-add): score the
            # time-aligned signals, est[L:] against target[:T-L] (and mixture[:T-L]).
            out = res.enhanced.float().cpu()[:, lat:]
            enhanced.extend(out.numpy())
            tgt_e = tgt_all[i : i + EVAL_BATCH]
            late_e = late_all[i : i + EVAL_BATCH]
            acc.add_speaker(self._speaker_evidence(teacher, out, chunk, tgt_e, late_e, res))
            if res.embeddings is not None:
                block_cos.append(_cos(res.embeddings.float().cpu().numpy(), tgt_e[None]))  # [K+1, b]
        traj = np.concatenate(block_cos, axis=1).mean(axis=1).tolist() if block_cos else None
        return enhanced, traj

    def _speaker_evidence(self, teacher, out, chunk: list, tgt_e: np.ndarray, late_e: np.ndarray,
                          res) -> dict[str, list[float]]:
        """Per utterance: cosine of the output's teacher embedding to the clean target's
        (``out_cos``), and of the embedding trajectory (``traj_cos``: mean over blocks;
        ``late_traj_cos``: blocks that start after the late start, against the embedding of the
        clean target's late part)."""
        emb_out = teacher.embed(out.to(self.device)).float().cpu().numpy()
        ev: dict[str, list[float]] = {"out_cos": _cos(emb_out, tgt_e).tolist()}
        if res.embeddings is None:
            ev["traj_cos"] = [float("nan")] * len(chunk)
            ev["late_traj_cos"] = [float("nan")] * len(chunk)
            return ev
        traj = res.embeddings.float().cpu().numpy()  # [K+1, b, D]
        ev["traj_cos"] = _cos(traj, tgt_e[None]).mean(axis=0).tolist()
        starts = np.arange(traj.shape[0]) * res.block_len
        late_traj = []
        for j, m in enumerate(chunk):
            start = _late_start(m)
            sel = starts >= start if start is not None else np.zeros(len(starts), dtype=bool)
            late_traj.append(float(_cos(traj[sel, j], late_e[j : j + 1]).mean()) if sel.any() else float("nan"))
        ev["late_traj_cos"] = late_traj
        return ev

    def speaker_metrics(self, cfg: ExperimentConfig, student) -> dict[str, float]:
        """EER / minDCF of the teacher (and the student) on the evaluation speakers, and their
        agreement. Crops of ``SPK_CROP_S`` seconds, ``SPK_PER_SPEAKER`` per speaker of the eval
        split (of the test corpus), all pairs scored. The crops are cut once and embedded once by
        the teacher (per grid) and once by each student: EER, minDCF and agreement share them."""
        import torch

        from bench.metrics.speaker import agreement, crop_audio, eval_crops

        teacher = self.teacher(cfg)
        corpus = self.test_corpus(cfg)
        split = eval_split(cfg)

        def crops():
            ids, spans, spk = eval_crops(corpus, split, SPK_PER_SPEAKER, SPK_CROP_S, 0)
            if len(set(spk)) < 2:
                raise ValueError(f"speaker metrics need >= 2 speakers in split {split!r}, found {len(set(spk))}")
            wav = np.stack([crop_audio(corpus.audio(u), a, b) for u, (a, b) in zip(ids, spans, strict=True)])
            return torch.from_numpy(wav), spk

        wav, spk = self._memoised("spk_crops", f"{corpus.key}{split}", crops)
        t_emb = self._memoised("spk", teacher.identity + corpus.key + str(split), lambda: _embed_batched(
            lambda w: teacher.embed(w.to(self.device)).float().cpu(), wav))
        out = _verification("teacher", t_emb, spk)
        if student is None:
            return out
        dev = next(student.parameters()).device

        def s_embed(w):
            return torch.nn.functional.normalize(student(w.to(dev)).float(), dim=-1).cpu()

        def make():  # a student serves several cells (one per alpha): score it once
            s_emb = _embed_batched(s_embed, wav)
            return {**_verification("student", s_emb, spk), "student_agreement": float(agreement(s_emb, t_emb))}

        out.update(self._memoised("spk_student", f"{id(student)}{corpus.key}{split}", make))
        return out

    def _embed_each(self, cfg: ExperimentConfig, key: str, clips: list[np.ndarray]) -> np.ndarray:
        """Teacher embeddings ``[N, D]`` of clips of any length (memoised by ``key``). A clip is
        embedded once per teacher however often it recurs (the enrollment conditions share their
        clean targets, and a target's late part is the whole target where nothing changes), and
        clips of equal length go through the teacher together, ``EMBED_BATCH`` at a time."""
        import hashlib

        import torch

        teacher = self.teacher(cfg)

        def make():
            table = self._memo.setdefault(("clip_emb", teacher.identity), {})
            audio = [np.ascontiguousarray(x, dtype=np.float32) for x in clips]
            digests = [hashlib.sha1(x.tobytes()).hexdigest() + str(len(x)) for x in audio]
            todo: dict[int, dict[str, np.ndarray]] = {}
            for d, x in zip(digests, audio, strict=True):
                if d not in table:
                    todo.setdefault(len(x), {})[d] = x
            for group in todo.values():
                ds = list(group)
                for i in range(0, len(ds), EMBED_BATCH):
                    wav = torch.from_numpy(np.stack([group[d] for d in ds[i : i + EMBED_BATCH]])).to(self.device)
                    table.update(zip(ds[i : i + EMBED_BATCH], teacher.embed(wav).float().cpu().numpy(), strict=True))
            return np.stack([table[d] for d in digests])

        return self._memoised("embed", key, make)

    def start_embeddings(self, cfg: ExperimentConfig, condition: str, start: str = "enrollment") -> np.ndarray:
        """Teacher embeddings ``[N, D]`` the streams of one eval set start from: of the (degraded)
        ``enrollment``, of the whole ``clean_target`` or of the ``clean_enrollment``."""
        mixtures = self.eval_set(cfg, condition)
        audio = {"enrollment": lambda m: m.enrollment, "clean_target": lambda m: m.target,
                 "clean_enrollment": lambda m: m.enrollment_clean}
        if start not in audio:
            raise ValueError(f"unknown start embedding {start!r}; choices: {', '.join(audio)}")
        key = config_hash(self.teacher(cfg).identity, self._evalset_key(cfg, condition), start)
        return self._embed_each(cfg, key, [audio[start](m) for m in mixtures])

    def enrollment_embeddings(self, cfg: ExperimentConfig, condition: str, clean_target: bool = False) -> np.ndarray:
        """Teacher embeddings of the enrollments (or, with ``clean_target``, of the clean targets)."""
        return self.start_embeddings(cfg, condition, "clean_target" if clean_target else "enrollment")

    def target_embeddings(self, cfg: ExperimentConfig, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """``(whole, late)``: teacher embeddings of each clean target, and of its late part (after
        ``late_start_s``; the whole target again where a condition has no change)."""
        mixtures = self.eval_set(cfg, condition)
        whole = self.start_embeddings(cfg, condition, "clean_target")
        key = config_hash(self.teacher(cfg).identity, self._evalset_key(cfg, condition), "late_target")
        lat = [m.target[_late_start(m) or 0 :] for m in mixtures]
        return whole, self._embed_each(cfg, key, lat)

    def mean_embedding(self, cfg: ExperimentConfig) -> np.ndarray:
        """The mean teacher embedding of the training split's utterances, L2-normalised: the
        speaker-agnostic target of the ``shrink`` control."""
        from bench.pse.train import enrollment_embeddings

        teacher = self.teacher(cfg)
        corpus = self.corpus(cfg)

        def make():
            ids = [u.utt_id for u in corpus.utterances if u.split == "train"]
            table = enrollment_embeddings(teacher, corpus, ids, self.cache)
            import torch

            m = torch.nn.functional.normalize(torch.stack(list(table.values())).float(), dim=-1).mean(0)
            return torch.nn.functional.normalize(m, dim=0).numpy()

        return self._memoised("mean_emb", teacher.identity + corpus.key, make)

    def complexity(self, cfg: ExperimentConfig, model, refiner, student, teacher) -> dict[str, Any]:
        """Params and MACs per second of audio of backbone, teacher, student and refiner.

        The refiner's extra MACs are its encoder's MACs on one block (plus context) times blocks
        per second, with the block length rounded to the backbone's hop as streaming does. Each
        count is memoised by what it depends on (model, encoder, block, context, student mode),
        so a grid traces each model once rather than once per cell.
        """

        from bench.metrics.complexity import backbone_macs_report, count_params
        from bench.refine import block_samples, encoder_macs_per_s

        block = block_samples(cfg.refine.block_s, model.hop)
        ctx = int(round(getattr(cfg.refine, "context_s", 0.0) * SR))
        mode = getattr(cfg.refine, "student_mode", "window")

        def backbone():
            rep = backbone_macs_report(model)
            return float(rep["per_second"]), ",".join(sorted(rep["unsupported"] or []))

        def counted(what: str, key: tuple, fn) -> float:
            return self._memoised("macs", config_hash(what, *key), lambda: _safe(fn, what))

        pse_macs, unsupported = self._memoised("macs", config_hash("pse", id(model), cfg.pse.personalized), backbone)
        t_params = count_params(teacher)
        out: dict[str, Any] = {
            "pse_macs_per_s": pse_macs,
            "teacher_params": t_params["learnable"] + t_params["fixed"],
            "teacher_macs_per_s": counted("teacher", (teacher.identity, block, ctx),
                                          lambda: encoder_macs_per_s(teacher.embed, block, ctx)),
            "student_params": count_params(student)["learnable"] if student is not None else 0,
            # what the student costs per second of audio the way this cell runs it (window: block +
            # context per block; streaming: each block once)
            "student_macs_per_s": counted("student", (id(student), mode, block, ctx),
                                          lambda: _student_macs(cfg, student, block, ctx)) if student is not None else 0.0,
        }
        # alpha = 0 never runs the encoder (bit-identical to static), so it costs nothing extra.
        out["extra_macs_per_s"] = 0.0
        if updates_embedding(cfg) and cfg.refine.alpha > 0:
            from bench.refine import Refiner

            # a student refiner that counts the default way costs exactly the student's MACs
            same = (student is not None and getattr(refiner, "student", None) is student
                    and type(refiner).count_extra_macs is Refiner.count_extra_macs)
            out["extra_macs_per_s"] = out["student_macs_per_s"] if same else counted(
                "refiner", _encoder_identity(refiner, block), lambda: refiner.count_extra_macs(block))
            refiner.extra_macs_per_s = out["extra_macs_per_s"]
        out["total_macs_per_s"] = out["pse_macs_per_s"] + out["extra_macs_per_s"]
        out["unsupported_ops"] = unsupported
        return out


def _encoder_identity(refiner, block: int) -> tuple:
    """What a refiner's extra MACs depend on: its class, the model it encodes with (the student a
    streaming wrapper streams), its context, its student mode and the block."""
    enc = refiner.encoder()
    owner = getattr(enc, "__self__", enc)
    owner = getattr(owner, "student", owner)
    return (type(refiner).__name__, id(owner), refiner.context_s, getattr(refiner, "mode", ""), block)


def _embed_batched(fn, wav, batch: int = 32):
    """``fn`` over the rows of ``wav`` in batches (no gradient), concatenated."""
    import torch

    with torch.no_grad():
        return torch.cat([torch.as_tensor(fn(wav[i : i + batch])).float().cpu() for i in range(0, len(wav), batch)])


def _verification(who: str, emb, spk: list[int]) -> dict[str, float]:
    """``<who>_eer`` and ``<who>_min_dcf`` over every pair of rows of ``emb``."""
    from bench.metrics.speaker import eer, min_dcf, trial_scores

    scores, labels = trial_scores(emb, spk)
    return {f"{who}_eer": eer(scores, labels), f"{who}_min_dcf": min_dcf(scores, labels)}


def _student_macs(cfg: ExperimentConfig, student, block: int, ctx: int) -> float:
    """MACs per second of audio of the student in the cell's ``refine.student_mode``."""
    from bench.refine import encoder_macs_per_s

    if getattr(cfg.refine, "student_mode", "window") == "streaming":
        from bench.students.streaming import streaming_encoder

        return encoder_macs_per_s(streaming_encoder(student), block, 0)
    return encoder_macs_per_s(student, block, ctx)


def _safe(fn, what: str) -> float:
    """A MAC count that fails is reported as NaN with a warning; it never loses the cell."""
    try:
        return float(fn())
    except Exception as exc:  # noqa: BLE001
        log.warning("could not count MACs of the %s: %s", what, exc)
        return float("nan")


class _Accumulator:
    """Timing, refinement counts and per-utterance speaker evidence of one cell's streams."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.audio = 0.0
        self.peak = 0.0
        self.n_updates = 0
        self.n_skipped = 0
        self.block_s = float("nan")
        self.cols: dict[str, list[float]] = {"skipped_frac": []}

    def add_timing(self, t, res, refining: bool, n: int) -> None:
        self.wall += t.wall_s
        self.audio += t.audio_s
        self.peak = max(self.peak, t.peak_mem_mb)
        self.n_updates += int(res.n_updates)
        self.n_skipped += int(res.n_skipped)
        self.block_s = res.block_len / SR
        if refining and res.skipped is not None and res.n_updates:
            # per utterance: share of its refinement updates the gate skipped
            self.cols["skipped_frac"].extend(res.skipped.float().mean(0).cpu().tolist())
        else:
            self.cols["skipped_frac"].extend([float("nan")] * n)

    def add_speaker(self, ev: dict[str, list[float]]) -> None:
        for k, v in ev.items():
            self.cols.setdefault(k, []).extend(v)

    def columns(self) -> dict[str, list[float]]:
        return self.cols


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis (broadcasting), NaN where a vector is zero."""
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a * b).sum(-1) / (na * nb)


def _late_start(m) -> int | None:
    """Sample where a stream's late part starts (None when the condition has no change)."""
    t = (m.meta or {}).get("late_start_s")
    if t is None:
        return None
    start = int(round(float(t) * SR))
    return start if start < len(m.target) - SR // 2 else None


def _score(cfg: ExperimentConfig, sets: dict[str, list], outs: dict[str, list[np.ndarray]],
           extra: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """Per-utterance metrics of ``outs`` (latency-aligned, per condition) against the clean
    targets, on the whole utterance and (``late_*``) on the part after a stream's change."""
    from bench.metrics.quality import evaluate_utterances

    items, late_items, late_pos = [], [], []
    for cond, ms in sets.items():
        for m, est in zip(ms, outs[cond], strict=True):
            n = len(est)
            items.append((est, m.target[:n], m.mixture[:n]))
            start = _late_start(m)
            if start is not None and start < n:
                late_pos.append(len(items) - 1)
                late_items.append((est[start:], m.target[start:n], m.mixture[start:n]))
    df = evaluate_utterances(items, workers=cfg.eval.workers, pesq=cfg.eval.pesq)
    if late_items:
        late = evaluate_utterances(late_items, workers=cfg.eval.workers, pesq=cfg.eval.pesq, estoi=False)
        for col in late.columns:
            full = np.full(len(df), np.nan) if late[col].dtype != bool else np.zeros(len(df), dtype=bool)
            full[late_pos] = late[col].to_numpy()
            df[f"late_{col}"] = full
    for k, v in (extra or {}).items():
        df[k] = v
    return _annotate_conditions(df, sets)


def _static(cfg: ExperimentConfig):
    from bench.config import RefineConfig
    from bench.refine import baseline_name

    return RefineConfig(name=baseline_name(), alpha=0.0, block_s=cfg.refine.block_s)


def _annotate_conditions(df: pd.DataFrame, sets: dict[str, list]) -> pd.DataFrame:
    """Prefix metric rows (in condition order, then mixture order) with condition, utt, speaker."""
    df = df.reset_index(drop=True).copy()
    df.insert(0, "condition", [cond for cond, ms in sets.items() for _ in ms])
    df.insert(1, "utt", [i for ms in sets.values() for i in range(len(ms))])
    df.insert(2, "speaker", [m.speaker for ms in sets.values() for m in ms])
    return df


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (np.integer, np.floating)):
            out[k] = v.item()
    return out


class _Enhancer:
    """Callable wrapper giving the distillation trainer enhanced speech from the backbone."""

    def __init__(self, model, identity: str) -> None:
        self.model = model
        self.identity = identity

    def __call__(self, mixture, emb):
        import torch

        with torch.no_grad():
            return self.model(mixture, emb)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
