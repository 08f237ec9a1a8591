"""What a grid's run does with its cells, shared by ``bench.run`` (one process) and
``bench.distributed`` (many workers):

* the cells every personalized cell is compared with (:func:`with_baselines`) and the ids of
  those comparisons (:func:`cell_links`);
* parallel training of the backbones and students the cells need (:func:`prefetch`);
* the rows of a run folder's tables (:func:`cell_row`, :func:`mixture_cell_row`,
  :func:`trajectory_rows`) and the files built from them (:func:`write_tables`,
  :func:`write_board`: leaderboard, figures and reports);
* one line per cell for logs and ``--dry-run`` (:func:`describe`), and the exit codes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import IMPLICIT_ROLES

if TYPE_CHECKING:
    import pandas as pd

    from bench.config import Cell, ExperimentConfig
    from bench.pipeline import Pipeline

EXIT_BAD_INPUT = 2
EXIT_CELL_FAILED = 1


def fail(msg: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print ``error: msg`` on stderr; returns the exit code ``code``."""
    print(f"error: {msg}", file=sys.stderr)
    return code


def _variant(cfg: ExperimentConfig, name: str) -> ExperimentConfig:
    """``cfg`` with refiner ``name`` and the same refine settings (a fixed refiner's alpha is 0)."""
    from bench.refine import refiner_class

    alpha = cfg.refine.alpha if refiner_class(name).updates_embedding else 0.0
    return replace(cfg, refine=replace(cfg.refine, name=name, alpha=alpha))


def with_baselines(cells: list[Cell], roles: Sequence[str] = IMPLICIT_ROLES) -> list[Cell]:
    """Add what every personalized cell is compared with, when the grid lacks it: the baseline
    (``static``) and the fixed references (``oracle_clean``, ``oracle_enroll_clean``) once (for a
    cell of the student-space reading: in its space, and the teacher space's static), and
    for every refining cell its ``control`` (``shrink``) and ``ceiling`` (``oracle_target``) with
    the same rate, rule, block, context and gate. ``roles`` (a grid's ``implicit`` key) says
    which of these roles are added; the default adds all four."""
    from bench.cache import config_hash
    from bench.config import Cell
    from bench.pipeline import eval_slice
    from bench.readings import student_reading
    from bench.refine import names_with_role, refiner_class

    have = {config_hash(eval_slice(c.config)) for c in cells}
    fixed = [n for r in ("baseline", "reference") if r in roles for n in names_with_role(r)]
    matched = [n for r in ("control", "ceiling") if r in roles for n in names_with_role(r)]
    extra = []

    def add(cfg, name: str) -> None:
        k = config_hash(eval_slice(cfg))
        if k not in have:
            have.add(k)
            extra.append(Cell(config=cfg, axes={"refine.name": name, "implicit": True}))

    for c in cells:
        if not c.config.pse.personalized:
            continue
        for name in fixed:
            add(_variant(c.config, name), name)
        if student_reading(c.config):  # what a student-space cell is also compared with
            add(_variant(replace(c.config, reading="teacher"), fixed[0]), fixed[0])
        cls = refiner_class(c.config.refine.name)
        if cls.role == "system" and cls.updates_embedding and c.config.refine.alpha > 0:
            for name in matched:
                add(_variant(c.config, name), name)
    return extra + cells


def describe(cfg: ExperimentConfig) -> str:
    """One line naming what a cell runs: system, teacher, backbone and the settings it reads."""
    from bench.cache import config_hash
    from bench.losses import loss_options
    from bench.pse.train import training_slice
    from bench.readings import student_reading
    from bench.refine import system_name, updates_embedding, uses_student

    parts = [f"system={system_name(cfg)}", f"teacher={cfg.teacher.name}/{cfg.teacher.source}",
             f"backbone={cfg.pse.name}/{cfg.pse.size}#{config_hash(training_slice(cfg.pse), length=6)}"]
    if uses_student(cfg) or student_reading(cfg):
        opts = loss_options(cfg.distill.loss)
        parts += ["reading=student"] if student_reading(cfg) else []
        parts += [f"loss={cfg.distill.loss}"] + ([f"tau={cfg.distill.tau}"] if "tau" in opts else [])
        parts += [f"seed={cfg.seed}", f"inputs={'+'.join(cfg.distill.inputs)}", f"steps={cfg.distill.steps}"]
        if cfg.distill.centre and "centre" in opts:
            parts += ["centre=true"]
        if cfg.distill.coord_weight and "coord_weight" in opts:
            parts += [f"coord_weight={cfg.distill.coord_weight}"]
        if cfg.distill.enh_emb_mix and "enhanced" in cfg.distill.inputs:
            parts += [f"enh_emb_mix={cfg.distill.enh_emb_mix}"]
        if cfg.distill.align != "none":
            parts += [f"align={cfg.distill.align}"]
    if updates_embedding(cfg):
        parts += [f"alpha={cfg.refine.alpha}", f"rule={cfg.refine.rule}", f"block_s={cfg.refine.block_s}",
                  f"context_s={cfg.refine.context_s}"]
        if uses_student(cfg) and cfg.refine.student_mode != "window":
            parts += [f"student_mode={cfg.refine.student_mode}"]
        if cfg.refine.rule == "anchored":
            parts += [f"n0={cfg.refine.n0}"]
        if cfg.refine.rule == "reliability":
            parts += [f"rel={cfg.refine.rel_lo}..{cfg.refine.rel_hi}"]
        if cfg.refine.gate != "none":
            parts += [f"gate={cfg.refine.gate}>{cfg.refine.gate_threshold}"]
    return " ".join(parts)


def cell_row(cfg: ExperimentConfig, cell_id: str, info: dict[str, Any], links: dict[str, str], common: dict[str, Any]) -> dict:
    from bench.cache import config_hash
    from bench.losses import loss_options
    from bench.readings import student_reading
    from bench.refine import refiner_class, system_name, updates_embedding, uses_student

    # a student-reading cell's loss columns name the student whose space it runs in
    stu = uses_student(cfg) or student_reading(cfg)
    refining = updates_embedding(cfg)
    cls = refiner_class(cfg.refine.name) if cfg.pse.personalized else None
    return {
        "cell_id": cell_id,
        **links,
        "system": system_name(cfg),
        "role": cls.role if cls is not None else "backbone",
        "teacher": cfg.teacher.name,
        "teacher_source": cfg.teacher.source,
        "teacher_weights": info.get("teacher_weights", ""),
        # which space the backbone is conditioned in (teacher: the teacher's; student: the
        # student's own, the teacher then needed at training time only)
        "reading": cfg.reading if cfg.pse.personalized else "",
        "loss": cfg.distill.loss if stu else "",
        "tau": cfg.distill.tau if stu and "tau" in loss_options(cfg.distill.loss) else float("nan"),
        "centre": bool(cfg.distill.centre) if stu and "centre" in loss_options(cfg.distill.loss) else "",
        "coord_weight": (cfg.distill.coord_weight if stu and "coord_weight" in loss_options(cfg.distill.loss)
                         else float("nan")),
        "align": cfg.distill.align if stu else "",
        "alpha": cfg.refine.alpha if refining else 0.0,
        "rule": cfg.refine.rule if refining else "",
        "n0": cfg.refine.n0 if refining and cfg.refine.rule == "anchored" else float("nan"),
        "block_s": cfg.refine.block_s if refining else float("nan"),
        "gate": cfg.refine.gate if refining else "",
        "gate_threshold": cfg.refine.gate_threshold if refining and cfg.refine.gate != "none" else float("nan"),
        "context_s": cfg.refine.context_s if refining else float("nan"),
        "student_mode": cfg.refine.student_mode if stu and refining else "",
        "seed": cfg.seed if stu else "",
        "student_inputs": "+".join(cfg.distill.inputs) if stu else "",
        "distill_steps": cfg.distill.steps if stu else float("nan"),
        # trained (here) or zoo:<sha256 prefix> (shipped in zoo/students/); "" without a student
        "student_source": (info.get("student_train") or {}).get("source", "trained") if uses_student(cfg) else "",
        # distill.enh_emb_mix: enhanced training inputs made under a drifted embedding (NaN: none)
        "enh_emb_mix": cfg.distill.enh_emb_mix if stu and "enhanced" in cfg.distill.inputs else float("nan"),
        "pse": f"{cfg.pse.name}/{cfg.pse.size}",
        "pse_source": info.get("pse_source", cfg.pse.source),
        "pse_key": str((info.get("pse_train") or {}).get("key", ""))[:8],
        # the operating level the cell was scored at (presets/levels/) and the inference-time
        # attenuation limit of its output (dB, 0 = off)
        "level": cfg.mix.level,
        "atten_lim_db": cfg.pse.atten_lim_db,
        "train_corpus": cfg.corpus.name if not cfg.corpus.path else f"{cfg.corpus.name}:{cfg.corpus.path}",
        "test_corpus": (cfg.test_corpus.name if not cfg.test_corpus.path
                        else f"{cfg.test_corpus.name}:{cfg.test_corpus.path}") if cfg.test_corpus.name else "(same)",
        "eval_split": cfg.eval.split,
        "pse_params": info.get("pse_params"),
        "pse_buffers": info.get("pse_buffers"),
        "pse_macs_per_s": info.get("pse_macs_per_s"),
        "teacher_params": info.get("teacher_params"),
        # the teacher on one block (plus context) per block, per second of audio (NaN: not countable)
        "teacher_macs_per_s": info.get("teacher_macs_per_s"),
        "student_params": info.get("student_params") if stu else 0,
        "extra_macs_per_s": info.get("extra_macs_per_s"),
        "total_macs_per_s": info.get("total_macs_per_s"),
        # one stream, block by block with its refiner, after a warm-up: processing / audio time
        "rtf": info.get("rtf"),
        # compute per block (backbone step + refiner update), ms, and the algorithmic latency
        "block_ms_p50": info.get("block_ms_p50"),
        "block_ms_p95": info.get("block_ms_p95"),
        "algo_latency_ms": info.get("algo_latency_ms"),
        # the evaluation's own throughput (batches of streams, no warm-up), wall / audio
        "batch_rtf": info.get("batch_rtf"),
        "peak_mem_mb": info.get("peak_mem_mb"),
        "teacher_eer": info.get("teacher_eer"),
        "teacher_min_dcf": info.get("teacher_min_dcf"),
        "student_eer": info.get("student_eer") if stu else float("nan"),
        "student_min_dcf": info.get("student_min_dcf") if stu else float("nan"),
        "student_agreement": info.get("student_agreement") if stu else float("nan"),
        "student_val_agreement": (info.get("student_train") or {}).get("val_agreement", float("nan")),
        # the mechanism: mean cosine to the teacher's mean direction on the validation windows
        "student_mean_cos": (info.get("student_train") or {}).get("val_mean_cos_student", float("nan")),
        "teacher_mean_cos": (info.get("student_train") or {}).get("val_mean_cos_teacher", float("nan")),
        "config_hash": config_hash({k: v for k, v in cfg.to_dict().items() if k != "cache_dir"}),
        **common,
    }


def cell_links(cfg: ExperimentConfig, by_key: dict[str, Any]) -> dict[str, str]:
    """Ids of the cells ``cfg`` is compared with, among the cell ids ``by_key`` (see
    ``bench.report.leaderboard``); "" where the grid has no such cell."""
    from bench.cache import config_hash
    from bench.pipeline import eval_slice
    from bench.readings import student_reading
    from bench.refine import baseline_name, names_with_role, reference_name, refiner_class

    def match(c: ExperimentConfig, refine_name: str) -> str:
        k = config_hash(eval_slice(_variant(c, refine_name)))
        return k if k in by_key else ""

    if not cfg.pse.personalized:  # compared with the static personalized backbone it pairs with
        cfg = replace(cfg, pse=replace(cfg.pse, personalized=True))
        return {"static_id": match(cfg, baseline_name()), "control_id": "", "upper_id": "", "clean_id": "",
                "teacher_static_id": ""}
    cls = refiner_class(cfg.refine.name)
    matched = cls.updates_embedding and cfg.refine.alpha > 0
    first = {role: (names_with_role(role) or [""])[0] for role in ("control", "ceiling")}
    return {
        "static_id": match(cfg, baseline_name()),
        "control_id": match(cfg, first["control"]) if matched and first["control"] else "",
        "upper_id": match(cfg, first["ceiling"]) if matched and first["ceiling"] else "",
        "clean_id": match(cfg, reference_name("clean_target")) if reference_name("clean_target") else "",
        # a student-space cell is also compared with the teacher space's static on the same mixtures
        "teacher_static_id": match(replace(cfg, reading="teacher"), baseline_name()) if student_reading(cfg) else "",
    }


def mixture_cell_row(common: dict[str, Any]) -> dict[str, Any]:
    """The ``cells.csv`` row of the unprocessed mixture (cell id ``mixture``)."""
    return {"cell_id": "mixture", "static_id": "", "upper_id": "", "control_id": "", "clean_id": "", "teacher_static_id": "",
            "system": "mixture", "role": "input", "teacher": "", "teacher_source": "", "loss": "",
            "alpha": float("nan"), **common}


def trajectory_rows(cell_id: str, cell: dict[str, Any], info: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``trajectory.csv``: per cell, condition and block, the mean cosine between the
    embedding used for that block and the teacher embedding of the clean target."""
    block_s = float(info.get("block_s", float("nan")))
    keep = ("system", "role", "loss", "alpha", "rule", "seed")
    return [{"cell_id": cell_id, **{k: cell.get(k) for k in keep}, "condition": cond, "block": k,
             "t_s": k * block_s, "cos_to_target": float(c)}
            for cond, series in (info.get("trajectory") or {}).items() for k, c in enumerate(series)]


def unscored_dropped(per: pd.DataFrame) -> pd.DataFrame:
    """``per`` without the columns of metrics no cell of the run scored: a metric column that is
    NaN on every row together with its ``<metric>_failed`` flag, which is then False on every row
    (not computed is not failed). A metric scored on some rows keeps both columns."""
    drop = []
    for col in per.columns:
        flag = f"{col}_failed"
        if flag in per.columns and per[col].isna().all() and not per[flag].astype(bool).any():
            drop += [col, flag]
    return per.drop(columns=drop)


def write_tables(out: Path, per_utt: list[pd.DataFrame], cell_rows: list[dict], traj_rows: list[dict]) -> None:
    """``per_utterance.csv``, ``cells.csv`` and ``trajectory.csv`` of a run folder (atomically)."""
    import pandas as pd

    from bench.cache import atomic_path

    if per_utt:
        with atomic_path(out / "per_utterance.csv") as tmp:
            unscored_dropped(pd.concat(per_utt, ignore_index=True)).to_csv(tmp, index=False)
    with atomic_path(out / "cells.csv") as tmp:
        pd.DataFrame(cell_rows).to_csv(tmp, index=False)
    if traj_rows:
        with atomic_path(out / "trajectory.csv") as tmp:
            pd.DataFrame(traj_rows).to_csv(tmp, index=False)


def write_board(out: Path, name: str, per_utt: list[pd.DataFrame], cell_rows: list[dict], n_boot: int, common: dict[str, Any],
                argv: list[str] | None, figures: bool = True, shown_as: Path | None = None) -> pd.DataFrame:
    """``leaderboard.csv`` and ``leaderboard.md`` of a run folder, then (with ``figures``) its
    figures, REPORT.md and report.html (one that cannot be drawn is a warning naming ``shown_as``,
    the folder the user will find the run in, never a lost run). Returns the leaderboard."""
    import pandas as pd

    from bench.cache import atomic_path, atomic_write_text
    from bench.report import leaderboard

    board = leaderboard(pd.concat(per_utt, ignore_index=True), pd.DataFrame(cell_rows), n_boot=n_boot, seed=0)
    with atomic_path(out / "leaderboard.csv") as tmp:
        board.to_csv(tmp, index=False)
    atomic_write_text(out / "leaderboard.md", _markdown_report(name, board, common, argv))
    if figures:
        from bench.report.figures import draw_report

        draw_report(out, shown_as or out)
    return board


def _markdown_report(name: str, board: pd.DataFrame, common: dict[str, Any], argv: list[str] | None) -> str:
    from bench.report import markdown_table
    from bench.report.markdown import md_text

    lines = [f"# Leaderboard: {md_text(name)}", "",
             f"Generated by {md_text(' '.join(argv or []))} on {md_text(common['date'])}, commit "
             f"{md_text(common['git_commit'])}, device {md_text(common['device'])}.", "",
             f"Versions: {md_text(common['versions'])}", ""]
    weights = sorted({str(w) for w in board.get("teacher_weights", []) if isinstance(w, str) and w})
    if weights:
        lines += ["Teacher weights: " + "; ".join(md_text(w) for w in weights), ""]
    shown = board.apply(lambda col: col.map(lambda v: md_text(v) if isinstance(v, str) else v))
    lines += ["## Pooled over conditions", "", markdown_table(shown, md_text("all")), ""]
    for cond in [c for c in dict.fromkeys(board["condition"]) if c != "all"]:
        lines += [f"## Condition: {md_text(cond)}", "", markdown_table(shown, md_text(cond)), ""]
    return "\n".join(lines)


def stage_workers(cfg: ExperimentConfig) -> int:
    """Worker processes that train stages in parallel: ``$PSE_KD_WORKERS``, else ``eval.workers``
    capped by the cores."""
    import os

    return int(os.environ.get("PSE_KD_WORKERS", "0")) or max(1, min(cfg.eval.workers, os.cpu_count() or 1))


def _stage_worker(kind: str, cfg_dict: dict, cache_root: str, device: str = "cpu", threads: int = 1) -> str:
    """Train one backbone or student in a worker process (``threads`` torch threads; one on a CPU)
    on ``device`` into the cache."""
    from bench.cache import Cache
    from bench.config import ExperimentConfig
    from bench.pipeline import Pipeline
    from bench.runtime import set_threads

    set_threads(threads)
    cfg = ExperimentConfig.from_dict(cfg_dict)
    pipe = Pipeline(Cache(cache_root), device=device, progress=False)
    getattr(pipe, kind)(cfg)
    return kind


def _job_devices(device: str, n_jobs: int, workers: int) -> tuple[list[str], int]:
    """Per job, the device its worker trains on, and the torch threads of a worker. On a CPU: the
    CPU, one thread. On CUDA: the jobs spread over the visible GPUs (``cuda:i``; the keys only
    carry the device type, so any GPU serves any job), the cores shared among the workers."""
    import os

    if device == "cpu":
        return ["cpu"] * n_jobs, 1
    import torch

    n_gpu = torch.cuda.device_count()
    devices = [f"cuda:{j % n_gpu}" for j in range(n_jobs)] if n_gpu > 1 else [device] * n_jobs
    return devices, max(1, (os.cpu_count() or 1) // max(1, workers))


def prefetch(pipe: Pipeline, cells: list[Cell], workers: int, progress: bool = True) -> None:
    """Train the backbones, then the students, that the cells need, ``workers`` at a time.

    Stages are independent given their inputs, so on a multi-core CPU they train in parallel
    processes of one thread each (faster than one process with all threads for models this
    small). On CUDA the workers share the GPU (or spread over several): models this small leave
    one busy far below its capacity. Workers are spawned (never forked: a child of a process with
    a CUDA context cannot use CUDA). Everything lands in the cache; the cells then load it. With
    one worker nothing is done here and the cells train their stages lazily.
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    from tqdm import tqdm

    from bench.distill import distill_key, warm_targets
    from bench.pse.train import stage_key
    from bench.readings import student_reading
    from bench.refine import uses_student

    if workers <= 1:
        return
    pse_jobs: dict[str, Any] = {}
    stu_jobs: dict[str, Any] = {}
    for c in cells:
        cfg = c.config
        corpus = pipe.corpus(cfg)
        teacher = pipe.teacher(cfg)
        k = stage_key(cfg, corpus, teacher, pipe.device)
        if not pipe.cache.is_done("pse", k):
            pse_jobs.setdefault(k, cfg)
        if uses_student(cfg) and not student_reading(cfg):  # a student-reading cell's was distilled above
            # The enhancer's identity is the backbone's key; distill_key reads it off this stub.
            stub = type("E", (), {"identity": k})()
            sk = distill_key(cfg, corpus, teacher, stub if "enhanced" in cfg.distill.inputs else None, pipe.device)
            if not pipe.cache.is_done("student", sk):
                stu_jobs.setdefault(sk, cfg)
    if stu_jobs:
        done: set[str] = set()
        for cfg in stu_jobs.values():
            t = pipe.teacher(cfg)
            if t.identity not in done:
                done.add(t.identity)
                warm_targets(cfg, pipe.corpus(cfg), t, pipe.cache)
    ctx = mp.get_context("spawn")
    for kind, jobs in (("pse", pse_jobs), ("student", stu_jobs)):
        if len(jobs) < 2:
            continue  # a single job runs in-process with all threads
        n = min(workers, len(jobs))
        devices, threads = _job_devices(pipe.device, len(jobs), n)
        with cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx) as ex:
            futs = [ex.submit(_stage_worker, kind, cfg.to_dict(), str(pipe.cache.root), dev, threads)
                    for cfg, dev in zip(jobs.values(), devices, strict=True)]
            bar = tqdm(total=len(futs), desc=f"training {kind} ({n} workers)", unit="model", disable=not progress)
            for f in cf.as_completed(futs):
                try:
                    f.result()
                except Exception as exc:  # noqa: BLE001 - retried serially by the cell, which reports
                    logging.warning("%s training failed in a worker: %s: %s", kind, type(exc).__name__, exc)
                bar.update(1)
            bar.close()
