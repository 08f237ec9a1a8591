"""What a run's reports show that its tables do not hold: the signals of one test stream and
the content hashes of the corpora.

``bench.run`` calls :func:`save_assets` once every cell is scored, before the figures. It writes
into the run folder

- ``example/{mixture,static,refined,clean}.wav``: 16-bit PCM, one crop of at most
  :data:`CROP_S` seconds of one test stream (the first stream of the run's first stream
  condition; around its change when it has one), time-aligned, with one common gain;
- ``example/example.json``: which stream, cells, crop and gain (:func:`spectrogram_points`
  reads it back for the spectrogram figure and report.html);
- ``corpora.json``: the content key (``bench.data.corpus.Corpus.key``) of every training and
  test corpus of the grid.

The two outputs are those of the static cell and of the refining system (role ``system``,
rate > 0) with the largest mean SI-SDR gain over static on that condition. They are enhanced
again here, one stream in a batch of one, with the models the cells used (from the pipeline's
memory or cache): the evaluation stage, its cache and its numbers are untouched, and the scored
metrics of the stream stay those of ``per_utterance.csv``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.audio import SR

log = logging.getLogger("bench")

CROP_S = 4.0
PEAK = 0.9  # the loudest of the four crops peaks here


def pick_example(per: pd.DataFrame, cells: pd.DataFrame) -> tuple[str, str, str] | None:
    """``(condition, refined cell, static cell)``: the run's first stream condition and, on it, the
    refining system with the largest mean SI-SDR gain over its static cell (None if none)."""
    from bench.config import STREAM_CONDITIONS

    conds = [c for c in dict.fromkeys(per["condition"]) if c in STREAM_CONDITIONS]
    if not conds or "role" not in cells or "static_id" not in cells:
        return None
    means = per[per["condition"] == conds[0]].groupby("cell_id")["si_sdr"].mean()
    cand = cells[(cells["role"] == "system") & (cells["alpha"].fillna(0) > 0)]
    best: tuple[float, str, str] | None = None
    for _, c in cand.iterrows():
        cid, sid = str(c["cell_id"]), str(c["static_id"])
        if cid in means and sid in means and np.isfinite(means[cid] - means[sid]):
            gain = float(means[cid] - means[sid])
            if best is None or gain > best[0]:
                best = (gain, cid, sid)
    return (conds[0], best[1], best[2]) if best else None


def enhance_one(pipe: Any, cfg: Any, condition: str, index: int) -> np.ndarray:
    """The latency-aligned output of cell ``cfg`` on stream ``index`` of ``condition``, enhanced
    as the evaluation does (same models, refiner, start embedding and block length)."""
    import torch

    from bench.refine import enhance_streaming, make_refiner, uses_student

    teacher = pipe.teacher(cfg)
    model, _ = pipe.pse(cfg)
    student = pipe.student(cfg)[0] if uses_student(cfg) else None
    refiner = make_refiner(cfg.refine, student, teacher)
    if refiner.needs_mean_embedding:
        refiner.bind(mean_embedding=pipe.mean_embedding(cfg))
    m = pipe.eval_set(cfg, condition)[index]
    e0 = pipe.start_embeddings(cfg, condition, refiner.start)[index : index + 1]
    mix = torch.from_numpy(np.ascontiguousarray(m.mixture[None], dtype=np.float32)).to(pipe.device)
    tgt = torch.from_numpy(np.ascontiguousarray(m.target[None], dtype=np.float32)) if refiner.needs_target else None
    with torch.no_grad():
        res = enhance_streaming(model, mix, torch.from_numpy(e0).to(pipe.device), refiner, cfg.refine.block_s,
                                target=tgt)
    lat = int(getattr(model, "latency_samples", 0))
    return res.enhanced.float().cpu().numpy()[0, lat:]


def crop_window(n: int, late_start: int | None, crop: int) -> tuple[int, int]:
    """``[start, stop)`` of at most ``crop`` samples of ``n``: centred on ``late_start`` (the
    stream's change) when there is one, else the end (where a refiner has had the most time)."""
    if n <= crop:
        return 0, n
    start = late_start - crop // 2 if late_start is not None else n - crop
    start = int(np.clip(start, 0, n - crop))
    return start, start + crop


def save_example(pipe: Any, configs: dict[str, Any], run_dir: Path) -> Path | None:
    """Write ``example/`` (see the module docstring); returns its JSON (None: no stream or no
    refining system in the run)."""
    from bench.audio import save

    per, cells = pd.read_csv(run_dir / "per_utterance.csv"), pd.read_csv(run_dir / "cells.csv")
    pick = pick_example(per, cells.fillna({"static_id": ""}))
    if pick is None or pick[1] not in configs or pick[2] not in configs:
        return None
    from bench.refine import baseline_name

    cond, rid, sid = pick
    base = baseline_name()  # the file and label of the baseline's audio
    m = pipe.eval_set(configs[rid], cond)[0]
    outs = {base: enhance_one(pipe, configs[sid], cond, 0), "refined": enhance_one(pipe, configs[rid], cond, 0)}
    n = min(len(o) for o in outs.values())
    late = (m.meta or {}).get("late_start_s")
    a, b = crop_window(n, int(round(float(late) * SR)) if late is not None else None, int(CROP_S * SR))
    sig = {"mixture": m.mixture[a:b], base: outs[base][a:b], "refined": outs["refined"][a:b],
           "clean": m.target[a:b]}
    gain = PEAK / max(max(float(np.max(np.abs(x))) for x in sig.values()), 1e-6)
    folder = run_dir / "example"
    folder.mkdir(parents=True, exist_ok=True)
    for name, x in sig.items():
        save(folder / f"{name}.wav", np.asarray(x, dtype=np.float32) * gain)
    row = cells.set_index("cell_id")
    ids = {"mixture": "mixture", base: sid, "refined": rid, "clean": ""}
    meta = {"condition": cond, "utt": 0, "speaker": m.speaker, "crop_start_s": a / SR, "crop_s": (b - a) / SR,
            "sr": SR, "gain": gain, "late_start_s": late,
            "signals": [{"name": k, "file": f"{k}.wav", "cell_id": v,
                         "system": str(row.loc[v, "system"]) if v in row.index else ("clean target" if k == "clean"
                                                                                    else k),
                         "alpha": float(row.loc[v, "alpha"]) if v in row.index and pd.notna(row.loc[v, "alpha"])
                         else None} for k, v in ids.items()]}
    path = folder / "example.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def corpus_hashes(pipe: Any, configs: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{"train": {corpus: key}, "test": {corpus: key}}`` over the grid's cells."""
    out: dict[str, dict[str, str]] = {"train": {}, "test": {}}
    for cfg in configs.values():
        c = cfg.corpus
        out["train"][" ".join(str(v) for v in (c.name, c.path or c.size) if v)] = pipe.corpus(cfg).key
        t = cfg.test_corpus if cfg.test_corpus.name else c
        out["test"][" ".join(str(v) for v in (t.name, t.path or getattr(t, "size", "")) if v)] = \
            pipe.test_corpus(cfg).key
    return out


def save_assets(pipe: Any, configs: dict[str, Any], run_dir: Path) -> None:
    """:func:`save_example` and ``corpora.json``; a failure is a warning, never a lost run."""
    from bench.report import write_json

    try:
        write_json(run_dir / "corpora.json", corpus_hashes(pipe, configs))
    except Exception as exc:  # noqa: BLE001
        log.warning("corpus hashes not recorded (%s: %s)", type(exc).__name__, exc)
    try:
        save_example(pipe, configs, run_dir)
    except Exception as exc:  # noqa: BLE001
        log.warning("no example stream for the report (%s: %s)", type(exc).__name__, exc)


def spectrogram_points(run_dir: Path) -> pd.DataFrame:
    """One row per signal of ``<run>/example/example.json`` with the whole stream's scored
    SI-SDR (``per_utterance.csv``) of the cell it comes from."""
    meta = json.loads((run_dir / "example" / "example.json").read_text())
    rows = [{"name": s["name"], "file": f"example/{s['file']}", "cell_id": s.get("cell_id", ""),
             "system": s.get("system", ""), "condition": meta["condition"], "utt": meta["utt"],
             "crop_start_s": meta["crop_start_s"], "crop_s": meta["crop_s"]} for s in meta["signals"]]
    pts = pd.DataFrame(rows)
    per_path = run_dir / "per_utterance.csv"
    if per_path.is_file():
        per = pd.read_csv(per_path, usecols=lambda c: c in ("cell_id", "condition", "utt", "si_sdr"))
        pts = pts.merge(per, on=["cell_id", "condition", "utt"], how="left")
    return pts
