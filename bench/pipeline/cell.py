"""Evaluation of one cell: stream every condition's mixtures through the backbone with the cell's
refiner, score each utterance against its clean target, and time one stream.

The functions take the :class:`bench.pipeline.Pipeline` (``pipe``) for the stages they need;
they ask it, never the modules behind it, so a caller can observe or replace a stage
(``bench.perf`` times each one this way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.audio import SR
from bench.config import ExperimentConfig

EVAL_BATCH = 16
TIMED_S = 8.0  # seconds of one stream timed per cell (rtf, block latency)


@dataclass
class CellResult:
    """Per-utterance rows of one cell plus its complexity and timing."""

    rows: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


def evaluate_cell(pipe: Any, cfg: ExperimentConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-utterance rows and the cell's info (system, timing, complexity, provenance)."""
    from bench.metrics.complexity import count_params
    from bench.refine import make_refiner, system_name, uses_student

    teacher = pipe.teacher(cfg)
    model, pse_info = pipe.pse(cfg)
    student, student_info = pipe.student(cfg) if uses_student(cfg) else (None, {})
    refine_cfg = cfg.refine if cfg.pse.personalized else _static(cfg)
    refiner = make_refiner(refine_cfg, student, teacher)
    if refiner.needs_mean_embedding:
        refiner.bind(mean_embedding=pipe.mean_embedding(cfg))
    complexity = pipe.complexity(cfg, model, refiner, student, teacher)
    sets: dict[str, list] = {}
    outs: dict[str, list[np.ndarray]] = {}
    acc = _Accumulator()
    trajectories: dict[str, list[float]] = {}
    for cond in cfg.eval.conditions:
        sets[cond] = pipe.eval_set(cfg, cond)
        outs[cond], traj = stream_condition(pipe, cfg, cond, model, refiner, refine_cfg.block_s, acc)
        if traj is not None:
            trajectories[cond] = traj
    timing = pipe.stream_timing(cfg, model, refiner, refine_cfg.block_s)
    rows = score(cfg, sets, outs, acc.columns())
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
        **pipe.speaker_metrics(cfg, student),
        **complexity,
    }
    return rows, info


def stream_timing(pipe: Any, cfg: ExperimentConfig, model: Any, refiner: Any, block_s: float) -> dict[str, float]:
    """Real-time cost of the cell: one stream (batch 1; the first ``TIMED_S`` seconds of the
    longest test items), streamed block by block with its refiner after a 1 s warm-up
    (:func:`bench.refine.time_streaming`): ``rtf`` (processing time / audio time),
    ``block_ms_p50`` / ``block_ms_p95`` (compute per block) and ``algo_latency_ms`` (block +
    the backbone's latency)."""
    import torch

    from bench.refine import time_streaming

    cond = max(cfg.eval.conditions, key=lambda c: len(pipe.eval_set(cfg, c)[0].mixture))
    m = pipe.eval_set(cfg, cond)[0]
    n = min(len(m.mixture), int(TIMED_S * SR))
    mix = torch.from_numpy(np.ascontiguousarray(m.mixture[None, :n])).to(pipe.device)
    e0 = None
    if cfg.pse.personalized:
        e0 = torch.from_numpy(pipe.start_embeddings(cfg, cond, refiner.start)[:1]).to(pipe.device)
    tgt = torch.from_numpy(np.ascontiguousarray(m.target[None, :n])) if refiner.needs_target else None
    t = time_streaming(model, mix, e0, refiner, block_s, target=tgt).as_dict()
    return {"rtf": t["rtf"], "block_ms_p50": t["block_ms_p50"], "block_ms_p95": t["block_ms_p95"],
            "algo_latency_ms": t["algo_latency_ms"], "timed_audio_s": t["audio_s"]}


def stream_condition(pipe: Any, cfg: ExperimentConfig, cond: str, model: Any, refiner: Any, block_s: float,
                     acc: _Accumulator) -> tuple[list[np.ndarray], list[float] | None]:
    """Enhance one condition's mixtures block by block; record per-utterance speaker evidence
    in ``acc``. Returns the latency-aligned outputs and the per-block mean cosine of the
    embedding trajectory to the clean target's embedding (None without an embedding)."""
    import torch

    from bench.refine import enhance_streaming
    from bench.runtime import measure

    teacher = pipe.teacher(cfg)
    mixtures = pipe.eval_set(cfg, cond)
    personalized = cfg.pse.personalized
    e0_all = pipe.start_embeddings(cfg, cond, refiner.start) if personalized else None
    tgt_all, late_all = pipe.target_embeddings(cfg, cond)
    lat = int(getattr(model, "latency_samples", 0))
    refining = refiner.updates_embedding and personalized
    enhanced: list[np.ndarray] = []
    block_cos: list[np.ndarray] = []
    n_evidence = int(cfg.eval.evidence_n) or len(mixtures)  # items whose output the teacher re-embeds
    for i in range(0, len(mixtures), EVAL_BATCH):
        chunk = mixtures[i : i + EVAL_BATCH]
        mix = torch.from_numpy(np.stack([m.mixture for m in chunk])).to(pipe.device)
        tgt = torch.from_numpy(np.stack([m.target for m in chunk])) if refiner.needs_target else None
        e0 = torch.from_numpy(e0_all[i : i + EVAL_BATCH]).to(pipe.device) if personalized else None
        with measure(pipe.device, audio_s=mix.numel() / SR) as t, torch.no_grad():
            res = enhance_streaming(model, mix, e0, refiner, block_s, target=tgt)
        acc.add_timing(t, res, refining, len(chunk))
        # The backbone's output lags its input by `latency_samples` (overlap-add): score the
        # time-aligned signals, est[L:] against target[:T-L] (and mixture[:T-L]).
        out = res.enhanced.float().cpu()[:, lat:]
        enhanced.extend(out.numpy())
        tgt_e = tgt_all[i : i + EVAL_BATCH]
        late_e = late_all[i : i + EVAL_BATCH]
        acc.add_speaker(_speaker_evidence(teacher, pipe.device, out, chunk, tgt_e, late_e, res,
                                          max(0, min(len(chunk), n_evidence - i))))
        if res.embeddings is not None:
            block_cos.append(cos(res.embeddings.float().cpu().numpy(), tgt_e[None]))  # [K+1, b]
    traj = np.concatenate(block_cos, axis=1).mean(axis=1).tolist() if block_cos else None
    return enhanced, traj


def _speaker_evidence(teacher: Any, device: str, out: Any, chunk: list, tgt_e: np.ndarray, late_e: np.ndarray,
                      res: Any, n_out: int | None = None) -> dict[str, list[float]]:
    """Per utterance: cosine of the output's teacher embedding to the clean target's
    (``out_cos``; on the first ``n_out`` items of the chunk only, NaN after them; all when
    None), and of the embedding trajectory (``traj_cos``: mean over blocks;
    ``late_traj_cos``: blocks that start after the late start, against the embedding of the
    clean target's late part)."""
    n_out = len(chunk) if n_out is None else n_out
    out_cos = [float("nan")] * len(chunk)
    if n_out > 0:
        emb_out = teacher.embed(out[:n_out].to(device)).float().cpu().numpy()
        out_cos[:n_out] = cos(emb_out, tgt_e[:n_out]).tolist()
    ev: dict[str, list[float]] = {"out_cos": out_cos}
    if res.embeddings is None:
        ev["traj_cos"] = [float("nan")] * len(chunk)
        ev["late_traj_cos"] = [float("nan")] * len(chunk)
        return ev
    traj = res.embeddings.float().cpu().numpy()  # [K+1, b, D]
    ev["traj_cos"] = cos(traj, tgt_e[None]).mean(axis=0).tolist()
    starts = np.arange(traj.shape[0]) * res.block_len
    late_traj = []
    for j, m in enumerate(chunk):
        start = late_start(m)
        sel = starts >= start if start is not None else np.zeros(len(starts), dtype=bool)
        late_traj.append(float(cos(traj[sel, j], late_e[j : j + 1]).mean()) if sel.any() else float("nan"))
    ev["late_traj_cos"] = late_traj
    return ev


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

    def add_timing(self, t: Any, res: Any, refining: bool, n: int) -> None:
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


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis (broadcasting), NaN where a vector is zero."""
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a * b).sum(-1) / (na * nb)


def late_start(m: Any) -> int | None:
    """Sample where a stream's late part starts (None when the condition has no change)."""
    t = (m.meta or {}).get("late_start_s")
    if t is None:
        return None
    start = int(round(float(t) * SR))
    return start if start < len(m.target) - SR // 2 else None


def score(cfg: ExperimentConfig, sets: dict[str, list], outs: dict[str, list[np.ndarray]],
          extra: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """Per-utterance metrics of ``outs`` (latency-aligned, per condition) against the clean
    targets, on the whole utterance and (``late_*``) on the part after a stream's change; which
    metrics besides SI-SDR: ``eval.metrics`` (and ``eval.pesq``)."""
    from bench.config import EVAL_METRICS
    from bench.metrics.quality import Selection, evaluate_utterances
    from bench.metrics.spec import score_user_metrics, user_metrics

    items, late_items, late_pos, subset, mos_subset = [], [], [], [], []
    q = int(getattr(cfg.eval, "quality_n", 0) or 0)
    q_mos = int(getattr(cfg.eval, "mos_n", 0) or 0)
    for cond, ms in sets.items():
        for j, (m, est) in enumerate(zip(ms, outs[cond], strict=True)):
            n = len(est)
            items.append((est, m.target[:n], m.mixture[:n]))
            subset.append(not q or j < q)  # the slow metrics' subset (eval.quality_n)
            mos_subset.append(j < q_mos if q_mos else subset[-1])  # DNSMOS's own (eval.mos_n)
            start = late_start(m)
            if start is not None and start < n:
                late_pos.append(len(items) - 1)
                late_items.append((est[start:], m.target[start:n], m.mixture[start:n]))
    which = Selection.of([m for m in cfg.eval.metrics if m in EVAL_METRICS], pesq=cfg.eval.pesq)
    df = evaluate_utterances(items, workers=cfg.eval.workers, pesq=which.pesq, stoi=which.stoi, estoi=which.estoi,
                             dnsmos=which.dnsmos, pdnsmos=which.pdnsmos, subset=subset, mos_subset=mos_subset)
    for col, values in score_user_metrics(user_metrics(cfg.eval.metrics), items, subset, SR).items():
        df[col] = values
    if late_items:  # the late part: SI-SDR, PESQ and STOI (no ESTOI or DNSMOS)
        late = evaluate_utterances(late_items, workers=cfg.eval.workers, pesq=which.pesq, stoi=which.stoi,
                                   estoi=False, subset=[subset[i] for i in late_pos])
        for col in late.columns:
            full = np.full(len(df), np.nan) if late[col].dtype != bool else np.zeros(len(df), dtype=bool)
            full[late_pos] = late[col].to_numpy()
            df[f"late_{col}"] = full
    for k, v in (extra or {}).items():
        df[k] = v
    return _annotate_conditions(df, sets)


def _static(cfg: ExperimentConfig) -> Any:
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
