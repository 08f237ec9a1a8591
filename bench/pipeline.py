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
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench import registry
from bench.audio import SR
from bench.cache import Cache, atomic_path, config_hash
from bench.config import COMPETING_CONDITIONS, ExperimentConfig

log = logging.getLogger("bench")

# The evaluation mixtures do not depend on the cell's seed: every system and seed is scored on
# the same utterances, so differences are paired.
EVAL_SEED_OFFSET = 1000
STAGE_VERSION = {"evalset": 1, "eval": 1}
SPK_CROP_S = 1.0  # speaker-verification crops: about two refinement blocks
SPK_PER_SPEAKER = 8


# refiners that never update the embedding (their refine.alpha and block settings are irrelevant)
FIXED_EMBEDDING = ("static", "oracle_clean")


def updates_embedding(cfg: ExperimentConfig) -> bool:
    """Whether the cell's refiner re-embeds the enhanced output (``ema``, ``oracle``)."""
    return cfg.pse.personalized and cfg.refine.name not in FIXED_EMBEDDING


def system_name(cfg: ExperimentConfig) -> str:
    """Leaderboard system label of a cell."""
    if not cfg.pse.personalized:
        return "nonpersonalized"
    if cfg.refine.name in FIXED_EMBEDDING:
        return cfg.refine.name
    if cfg.refine.name == "ema":
        return f"student-{cfg.distill.loss}"
    return cfg.refine.name


def uses_student(cfg: ExperimentConfig) -> bool:
    return cfg.pse.personalized and cfg.refine.name == "ema"


def eval_slice(cfg: ExperimentConfig) -> dict[str, Any]:
    """The part of a cell's config its evaluation depends on (its cache key)."""
    s: dict[str, Any] = {
        "v": STAGE_VERSION["eval"],
        "corpus": cfg.corpus,
        "mix": cfg.mix,
        "eval": {k: v for k, v in vars(cfg.eval).items() if k not in ("workers",)},
        "teacher": cfg.teacher,
        "pse": cfg.pse,
    }
    if cfg.pse.personalized:
        s["refine"] = cfg.refine if updates_embedding(cfg) else {"name": cfg.refine.name}
    if uses_student(cfg):
        s["student"] = cfg.student
        s["distill"] = cfg.distill
        s["seed"] = cfg.seed
    return s


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

    def _memoised(self, stage: str, key: str, make):
        k = (stage, key)
        if k not in self._memo:
            self._memo[k] = make()
        return self._memo[k]

    # ------------------------------------------------------------------ stages
    def corpus(self, cfg: ExperimentConfig):
        from bench.data.corpus import load_corpus

        return self._memoised("corpus", config_hash(cfg.corpus), lambda: load_corpus(cfg.corpus, self.cache))

    def teacher(self, cfg: ExperimentConfig):
        from bench.teachers import load_teacher

        corpus = self.corpus(cfg)
        key = config_hash(cfg.teacher, corpus.key if cfg.teacher.source == "trained" else "")
        return self._memoised(
            "teacher", key, lambda: load_teacher(cfg.teacher, self.cache, corpus, self.device)
        )

    def _evalset_key(self, cfg: ExperimentConfig, condition: str) -> str:
        """Content key of one condition's fixed test mixtures (everything they depend on)."""
        extra = [cfg.eval.competing_sir_db] if condition in COMPETING_CONDITIONS else []
        return config_hash(STAGE_VERSION["evalset"], self.corpus(cfg).key, cfg.mix, cfg.eval.n_test,
                           cfg.eval.test_s, condition, cfg.corpus.seed + EVAL_SEED_OFFSET, cfg.eval.split,
                           *extra)

    def eval_set(self, cfg: ExperimentConfig, condition: str) -> list:
        """Fixed test mixtures of one condition (cached on disk)."""
        from bench.data.mix import load_eval_set, make_eval_set, save_eval_set

        corpus = self.corpus(cfg)
        seed = cfg.corpus.seed + EVAL_SEED_OFFSET
        key = self._evalset_key(cfg, condition)

        def make():
            path = self.cache.stage_dir("evalset", key) / "set.npz"
            if self.cache.is_done("evalset", key):
                return load_eval_set(path)
            mixtures = make_eval_set(corpus, cfg.eval.split, cfg.mix, condition, cfg.eval.n_test, seed,
                                     cfg.eval.test_s, cfg.eval.competing_sir_db)
            save_eval_set(path, mixtures)
            self.cache.mark_done("evalset", key, {"condition": condition, "n": len(mixtures)})
            return mixtures

        return self._memoised("evalset", key, make)

    def pse(self, cfg: ExperimentConfig):
        from bench.pse.train import stage_key, train_pse

        teacher = self.teacher(cfg)
        corpus = self.corpus(cfg)
        key = stage_key(cfg, corpus, teacher)

        def make():
            model, info = train_pse(cfg, corpus, teacher, self.cache, device=self.device, progress=self.progress)
            model.eval()
            return model, info

        return self._memoised("pse", key, make)

    def student(self, cfg: ExperimentConfig):
        from bench.distill import distill_key, distill_student
        from bench.pse.train import stage_key

        teacher = self.teacher(cfg)
        corpus = self.corpus(cfg)
        enhancer = None
        if "enhanced" in cfg.distill.inputs:
            pse_model, _ = self.pse(cfg)
            enhancer = _Enhancer(pse_model, identity=stage_key(cfg, corpus, teacher))
        key = distill_key(cfg, corpus, teacher, enhancer)

        def make():
            student, info = distill_student(cfg, corpus, teacher, self.cache, enhancer=enhancer, device=self.device,
                                            progress=self.progress)
            student.eval()
            return student, info

        return self._memoised("student", key, make)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, cfg: ExperimentConfig) -> CellResult:
        """Score one cell on every condition of ``cfg.eval.conditions`` (cached per cell)."""
        key = config_hash(eval_slice(cfg))
        stage_dir = self.cache.stage_dir("eval", key)
        csv = stage_dir / "rows.csv"
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
        from bench.metrics.quality import evaluate_utterances

        key = config_hash("mixture", cfg.corpus, cfg.mix, cfg.eval.n_test, cfg.eval.test_s, cfg.eval.split,
                          cfg.eval.conditions, cfg.eval.pesq, STAGE_VERSION["eval"])
        csv = self.cache.stage_dir("eval", key) / "rows.csv"
        if self.cache.is_done("eval", key):
            return pd.read_csv(csv)
        sets = {cond: self.eval_set(cfg, cond) for cond in cfg.eval.conditions}
        items = [(m.mixture, m.target, m.mixture) for ms in sets.values() for m in ms]
        df = evaluate_utterances(items, workers=cfg.eval.workers, pesq=cfg.eval.pesq)
        rows = _annotate_conditions(df, sets)
        with atomic_path(csv) as tmp:
            rows.to_csv(tmp, index=False)
        self.cache.mark_done("eval", key, {})
        return rows

    def _evaluate(self, cfg: ExperimentConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
        import torch

        from bench.harness import measure
        from bench.metrics.complexity import count_params
        from bench.metrics.quality import evaluate_utterances
        from bench.refine import enhance_streaming

        teacher = self.teacher(cfg)
        model, pse_info = self.pse(cfg)
        student = None
        student_info: dict[str, Any] = {}
        if uses_student(cfg):
            student, student_info = self.student(cfg)
        refine_cfg = cfg.refine if cfg.pse.personalized else _static(cfg)
        refiner = registry.get("refiner", refine_cfg.name)(refine_cfg, student, teacher)
        complexity = self.complexity(cfg, model, refiner, student, teacher)

        lat = int(getattr(model, "latency_samples", 0))
        sets: dict[str, list] = {}
        items: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        spk_cos: list[float] = []
        skip_frac: list[float] = []  # per utterance: share of its refinement updates the gate skipped
        refining = updates_embedding(cfg)
        wall = 0.0
        audio = 0.0
        peak = 0.0
        n_updates = 0
        n_skipped = 0
        batch = 16
        for cond in cfg.eval.conditions:
            mixtures = sets[cond] = self.eval_set(cfg, cond)
            enroll_all = self.enrollment_embeddings(cfg, cond)
            if getattr(refiner, "embeds_clean_target", False):
                e0_all = self.enrollment_embeddings(cfg, cond, clean_target=True)
            else:
                e0_all = enroll_all
            enhanced: list[np.ndarray] = []
            for i in range(0, len(mixtures), batch):
                chunk = mixtures[i : i + batch]
                mix = torch.from_numpy(np.stack([m.mixture for m in chunk])).to(self.device)
                e0 = torch.from_numpy(e0_all[i : i + batch]).to(self.device) if cfg.pse.personalized else None
                with measure(self.device, audio_s=mix.numel() / SR) as t, torch.no_grad():
                    res = enhance_streaming(model, mix, e0, refiner, refine_cfg.block_s)
                wall += t.wall_s
                audio += t.audio_s
                peak = max(peak, t.peak_mem_mb)
                n_updates += int(res.n_updates)
                n_skipped += int(res.n_skipped)
                if refining and res.skipped is not None and res.n_updates:
                    skip_frac.extend(res.skipped.float().mean(0).cpu().tolist())
                else:
                    skip_frac.extend([float("nan")] * len(chunk))
                # The backbone's output lags its input by `latency_samples` (overlap-add): score the
                # time-aligned signals, est[L:] against target[:T-L] (and mixture[:T-L]).
                out = res.enhanced.float().cpu()[:, lat:]
                enhanced.extend(out.numpy())
                emb_out = teacher.embed(out.to(self.device)).float().cpu().numpy()
                ref = enroll_all[i : i + batch]  # speaker cosine is always against the enrollment
                spk_cos.extend((emb_out * ref).sum(axis=1).tolist())
            n = len(enhanced[0]) if enhanced else 0
            items += [(enh, m.target[:n], m.mixture[:n]) for enh, m in zip(enhanced, mixtures, strict=True)]
        # one metric pool for every condition of the cell
        df = evaluate_utterances(items, workers=cfg.eval.workers, pesq=cfg.eval.pesq)
        df["spk_cos"] = spk_cos
        df["skipped_frac"] = skip_frac
        rows = _annotate_conditions(df, sets)
        pse_params = count_params(model)
        speaker = self.speaker_metrics(cfg, student)
        info: dict[str, Any] = {
            "system": system_name(cfg),
            "wall_s": wall,
            "rtf": wall / audio if audio else float("nan"),
            "peak_mem_mb": peak,
            "n_updates": n_updates,
            "n_skipped": n_skipped,
            "pse_params": pse_params["learnable"],
            "pse_buffers": pse_params["buffers"],
            "pse_train": _jsonable(pse_info),
            "student_train": _jsonable(student_info),
            "teacher_identity": teacher.identity,
            "teacher_weights": teacher.weights_origin,
            **speaker,
            **complexity,
        }
        return rows, info

    def speaker_metrics(self, cfg: ExperimentConfig, student) -> dict[str, float]:
        """EER / minDCF of the teacher (and the student) on the test speakers, and their agreement.

        Crops of ``SPK_CROP_S`` seconds, ``SPK_PER_SPEAKER`` per test speaker, all pairs scored.
        """
        import torch

        from bench.metrics.speaker import agreement, crop_audio, eval_crops, speaker_eval

        teacher = self.teacher(cfg)
        corpus = self.corpus(cfg)
        t = self._memoised("spk", teacher.identity + corpus.key, lambda: speaker_eval(
            teacher.embed, corpus, "test", SPK_PER_SPEAKER, SPK_CROP_S, 0))
        out = {"teacher_eer": t["eer"], "teacher_min_dcf": t["min_dcf"]}
        if student is None:
            return out
        dev = next(student.parameters()).device

        def s_embed(wav):
            return torch.nn.functional.normalize(student(wav.to(dev)).float(), dim=-1).cpu()

        def make():  # a student serves several cells (one per alpha): score it once
            s = speaker_eval(s_embed, corpus, "test", SPK_PER_SPEAKER, SPK_CROP_S, 0)
            ids, crops, _ = eval_crops(corpus, "test", SPK_PER_SPEAKER, SPK_CROP_S, 0)
            wav = torch.from_numpy(np.stack([crop_audio(corpus.audio(u), a, b)
                                             for u, (a, b) in zip(ids, crops, strict=True)]))
            with torch.no_grad():
                agree = agreement(s_embed(wav), teacher.embed(wav.to(self.device)).float().cpu())
            return {"student_eer": s["eer"], "student_min_dcf": s["min_dcf"], "student_agreement": float(agree)}

        out.update(self._memoised("spk_student", str(id(student)), make))
        return out

    def enrollment_embeddings(self, cfg: ExperimentConfig, condition: str, clean_target: bool = False) -> np.ndarray:
        """Teacher embeddings ``[N, D]`` of the (degraded) enrollments of one eval set.

        With ``clean_target`` the teacher embeds each test utterance's clean target instead (the
        ``oracle_clean`` upper bound).
        """
        import torch

        teacher = self.teacher(cfg)
        mixtures = self.eval_set(cfg, condition)
        key = config_hash(teacher.identity, self._evalset_key(cfg, condition), clean_target)

        def make():
            out = []
            for m in mixtures:  # enrollments differ in length (short condition): one at a time
                audio = m.target if clean_target else m.enrollment
                wav = torch.from_numpy(np.asarray(audio, dtype=np.float32))[None].to(self.device)
                out.append(teacher.embed(wav).float().cpu().numpy()[0])
            return np.stack(out)

        return self._memoised("enroll", key, make)

    def complexity(self, cfg: ExperimentConfig, model, refiner, student, teacher) -> dict[str, Any]:
        """Params and MACs per second of audio of backbone, teacher, student and refiner.

        The refiner's extra MACs are its encoder's MACs on one block (plus context) times blocks
        per second, with the block length rounded to the backbone's hop as streaming does.
        """
        import torch

        from bench.metrics.complexity import count_params, macs_per_second_report
        from bench.refine import block_samples, encoder_macs_per_s

        key = config_hash("complexity", cfg.pse, cfg.refine, cfg.student if student is not None else "",
                          teacher.identity, cfg.pse.personalized)

        def make():
            dev = next(model.parameters()).device
            emb = torch.zeros(1, teacher.dim, device=dev) if cfg.pse.personalized else None
            pse = macs_per_second_report(model, lambda n: (torch.zeros(1, n, device=dev), emb))
            block = block_samples(cfg.refine.block_s, model.hop)
            ctx = int(round(getattr(cfg.refine, "context_s", 0.0) * SR))
            t_params = count_params(teacher)
            out: dict[str, Any] = {
                "pse_macs_per_s": float(pse["per_second"]),
                "teacher_params": t_params["learnable"] + t_params["fixed"],
                "teacher_macs_per_s": _safe(lambda: encoder_macs_per_s(teacher.embed, block, ctx), "teacher"),
                "student_params": count_params(student)["learnable"] if student is not None else 0,
                "student_macs_per_s": (
                    _safe(lambda: encoder_macs_per_s(student, block, ctx), "student") if student is not None else 0.0
                ),
            }
            # alpha = 0 never runs the encoder (bit-identical to static), so it costs nothing extra.
            refines = updates_embedding(cfg) and cfg.refine.alpha > 0
            out["extra_macs_per_s"] = _safe(lambda: refiner.count_extra_macs(block), "refiner") if refines else 0.0
            out["total_macs_per_s"] = out["pse_macs_per_s"] + out["extra_macs_per_s"]
            out["unsupported_ops"] = ",".join(sorted(pse["unsupported"] or []))
            return out

        return self._memoised("complexity", key, make)


def _safe(fn, what: str) -> float:
    """A MAC count that fails is reported as NaN with a warning; it never loses the cell."""
    try:
        return float(fn())
    except Exception as exc:  # noqa: BLE001
        log.warning("could not count MACs of the %s: %s", what, exc)
        return float("nan")


def _static(cfg: ExperimentConfig):
    from bench.config import RefineConfig

    return RefineConfig(name="static", alpha=0.0, block_s=cfg.refine.block_s)


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
