"""``python -m bench.run --grid ablations/losses.yaml``: run a grid and write a leaderboard.

Writes ``<out>/per_utterance.csv``, ``<out>/cells.csv``, ``<out>/leaderboard.csv``,
``<out>/leaderboard.md`` and ``<out>/provenance.json`` (default ``<out>`` is
``results/<grid name>``). Every completed cell is on disk before the next one starts, and
stages are cached by content hash, so re-running resumes and recomputes only what changed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.output import partial_dir

EXIT_BAD_INPUT = 2
EXIT_CELL_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    from bench.distributed import add_heartbeat_option

    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Run a benchmark grid (teachers x losses x temperatures x refinement rates x seeds) "
        "and write a leaderboard with paired deltas against the static-embedding baseline.",
    )
    p.add_argument("--grid", required=True, help="grid YAML, e.g. ablations/losses.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config value for every cell, e.g. --set corpus.size=smoke (repeatable)")
    p.add_argument("--out", default=None, help="output directory (default: results/<grid name>)")
    p.add_argument("--cache-dir", default=None, help="artifact cache (default: $PSE_KD_CACHE or ~/.cache/pse-kd-bench)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="override config device")
    p.add_argument("--dry-run", action="store_true", help="expand and validate the grid, print the cells, run nothing")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default: eval.n_bootstrap)")
    p.add_argument("--no-figures", action="store_true", help="do not draw the figures at the end")
    p.add_argument("--plugins", action="append", default=[], metavar="MODULE",
                   help="import a module that registers your own plugins (repeatable; installed packages can "
                        "also declare them under the entry-point group pse_kd_bench.plugins)")
    d = p.add_argument_group("many workers (see README: 'Many workers, one grid')")
    d.add_argument("--storage", default=None, metavar="URL",
                   help="share the grid's cells among every worker started with this Optuna storage URL (e.g. "
                        "postgresql+psycopg://user:pw@host/db; needs pip install -e .[scale]) and one shared "
                        "--cache-dir: each cell runs once, a dead worker's cell is picked up again")
    add_heartbeat_option(d, "a worker's", "its claim is taken over", when="with --storage: ")
    d.add_argument("--board-only", action="store_true",
                   help="with --storage: write the leaderboard of the finished cells and exit, claiming none")
    return p


def _fail(msg: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bench.config import ConfigError, Grid
    from bench.registry import RegistryError, load_modules

    try:
        load_modules(args.plugins)
    except RegistryError as exc:
        return _fail(str(exc))
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.cache_dir:
        overrides.append(f"cache_dir={args.cache_dir}")
    try:
        grid = Grid.load(args.grid, overrides=overrides)
        cells = grid.cells()
    except (ConfigError, RegistryError) as exc:
        return _fail(str(exc))
    if args.bootstrap is not None and args.bootstrap < 1:
        return _fail(f"--bootstrap={args.bootstrap} is out of range: give at least 1 resample (1000 is usual)")
    cells = _with_baselines(cells)
    from bench.output import check_out, resolve_out

    out = resolve_out(Path(args.out) if args.out else Path("results") / grid.name)
    problem = check_out(out)
    if problem:
        return _fail(problem)
    if args.dry_run:
        for c in cells:
            print(_describe(c.config))
        print(f"{len(cells)} cells; output would go to {out}")
        return 0
    if args.board_only and not args.storage:
        return _fail("--board-only needs --storage URL (the study the workers share)")
    if args.storage:
        return _run_distributed(args, grid.name, cells, out, argv)
    try:
        return run_grid(grid.name, cells, out, progress=not args.no_progress, n_boot=args.bootstrap,
                        argv=["python -m bench.run", *(sys.argv[1:] if argv is None else argv)], grid_path=args.grid,
                        figures=not args.no_figures)
    except KeyboardInterrupt:
        print(f"\ninterrupted: completed cells are in {partial_dir(out)} and in the cache (the previous results "
              f"in {out}, if any, are untouched); re-run to resume", file=sys.stderr)
        return 130


def _run_distributed(args: argparse.Namespace, name: str, cells: list, out: Path, argv: list[str] | None) -> int:
    """``--storage``: this process is one of the grid's workers (``bench.distributed``)."""
    from bench.distributed import BoardJob, make_plan, run_distributed

    job = BoardJob(name=name, out=out, storage=args.storage, n_boot=args.bootstrap or cells[0].config.eval.n_bootstrap,
                   argv=["python -m bench.run", *(sys.argv[1:] if argv is None else argv)], grid_path=args.grid,
                   figures=not args.no_figures)
    try:
        return run_distributed(make_plan(name, cells), job, progress=not args.no_progress,
                               heartbeat_s=args.heartbeat, board_only=args.board_only)
    except KeyboardInterrupt:
        print("\ninterrupted: this worker's cell waits for another worker (or a re-run); finished cells are in "
              "the study and the cache", file=sys.stderr)
        return 130


def _variant(cfg, name: str):
    """``cfg`` with refiner ``name`` and the same refine settings (a fixed refiner's alpha is 0)."""
    from bench.refine import refiner_class

    alpha = cfg.refine.alpha if refiner_class(name).updates_embedding else 0.0
    return replace(cfg, refine=replace(cfg.refine, name=name, alpha=alpha))


def _with_baselines(cells: list) -> list:
    """Add what every personalized cell is compared with, when the grid lacks it: the baseline
    (``static``) and the fixed references (``oracle_clean``, ``oracle_enroll_clean``) once, and
    for every refining cell its ``control`` (``shrink``) and ``ceiling`` (``oracle_target``) with
    the same rate, rule, block, context and gate."""
    from bench.cache import config_hash
    from bench.config import Cell
    from bench.pipeline import eval_slice
    from bench.refine import names_with_role, refiner_class

    have = {config_hash(eval_slice(c.config)) for c in cells}
    fixed = names_with_role("baseline") + names_with_role("reference")
    matched = names_with_role("control") + names_with_role("ceiling")
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
        cls = refiner_class(c.config.refine.name)
        if cls.role == "system" and cls.updates_embedding and c.config.refine.alpha > 0:
            for name in matched:
                add(_variant(c.config, name), name)
    return extra + cells


def _describe(cfg) -> str:
    from bench.cache import config_hash
    from bench.losses import loss_options
    from bench.pse.train import training_slice
    from bench.refine import system_name, updates_embedding, uses_student

    parts = [f"system={system_name(cfg)}", f"teacher={cfg.teacher.name}/{cfg.teacher.source}",
             f"backbone={cfg.pse.name}/{cfg.pse.size}#{config_hash(training_slice(cfg.pse), length=6)}"]
    if uses_student(cfg):
        opts = loss_options(cfg.distill.loss)
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


def _cell_row(cfg, cell_id: str, info: dict[str, Any], links: dict[str, str], common: dict[str, Any]) -> dict:
    from bench.cache import config_hash
    from bench.losses import loss_options
    from bench.refine import refiner_class, system_name, updates_embedding, uses_student

    stu = uses_student(cfg)
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
        # distill.enh_emb_mix: enhanced training inputs made under a drifted embedding (NaN: none)
        "enh_emb_mix": cfg.distill.enh_emb_mix if stu and "enhanced" in cfg.distill.inputs else float("nan"),
        "pse": f"{cfg.pse.name}/{cfg.pse.size}",
        "pse_source": info.get("pse_source", cfg.pse.source),
        "pse_key": str((info.get("pse_train") or {}).get("key", ""))[:8],
        "train_corpus": cfg.corpus.name if not cfg.corpus.path else f"{cfg.corpus.name}:{cfg.corpus.path}",
        "test_corpus": (cfg.test_corpus.name if not cfg.test_corpus.path
                        else f"{cfg.test_corpus.name}:{cfg.test_corpus.path}") if cfg.test_corpus.name else "(same)",
        "eval_split": cfg.eval.split,
        "pse_params": info.get("pse_params"),
        "pse_buffers": info.get("pse_buffers"),
        "pse_macs_per_s": info.get("pse_macs_per_s"),
        "teacher_params": info.get("teacher_params"),
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


def cell_links(cfg, by_key: dict[str, Any]) -> dict[str, str]:
    """Ids of the cells ``cfg`` is compared with, among the cell ids ``by_key`` (see
    ``bench.report.leaderboard``); "" where the grid has no such cell."""
    from bench.cache import config_hash
    from bench.pipeline import eval_slice
    from bench.refine import baseline_name, names_with_role, reference_name, refiner_class

    def match(c, refine_name: str) -> str:
        k = config_hash(eval_slice(_variant(c, refine_name)))
        return k if k in by_key else ""

    if not cfg.pse.personalized:  # compared with the static personalized backbone it pairs with
        cfg = replace(cfg, pse=replace(cfg.pse, personalized=True))
        return {"static_id": match(cfg, baseline_name()), "control_id": "", "upper_id": "", "clean_id": ""}
    cls = refiner_class(cfg.refine.name)
    matched = cls.updates_embedding and cfg.refine.alpha > 0
    first = {role: (names_with_role(role) or [""])[0] for role in ("control", "ceiling")}
    return {
        "static_id": match(cfg, baseline_name()),
        "control_id": match(cfg, first["control"]) if matched and first["control"] else "",
        "upper_id": match(cfg, first["ceiling"]) if matched and first["ceiling"] else "",
        "clean_id": match(cfg, reference_name("clean_target")) if reference_name("clean_target") else "",
    }


def mixture_cell_row(common: dict[str, Any]) -> dict[str, Any]:
    """The ``cells.csv`` row of the unprocessed mixture (cell id ``mixture``)."""
    return {"cell_id": "mixture", "static_id": "", "upper_id": "", "control_id": "", "clean_id": "",
            "system": "mixture", "role": "input", "teacher": "", "teacher_source": "", "loss": "",
            "alpha": float("nan"), **common}


def write_tables(out: Path, per_utt: list, cell_rows: list[dict], traj_rows: list[dict]) -> None:
    """``per_utterance.csv``, ``cells.csv`` and ``trajectory.csv`` of a run folder (atomically)."""
    import pandas as pd

    from bench.cache import atomic_path

    if per_utt:
        with atomic_path(out / "per_utterance.csv") as tmp:
            pd.concat(per_utt, ignore_index=True).to_csv(tmp, index=False)
    with atomic_path(out / "cells.csv") as tmp:
        pd.DataFrame(cell_rows).to_csv(tmp, index=False)
    if traj_rows:
        with atomic_path(out / "trajectory.csv") as tmp:
            pd.DataFrame(traj_rows).to_csv(tmp, index=False)


def write_board(out: Path, name: str, per_utt: list, cell_rows: list[dict], n_boot: int, common: dict[str, Any],
                argv: list[str] | None, figures: bool = True):
    """``leaderboard.csv`` and ``leaderboard.md`` of a run folder, then (with ``figures``) its
    figures and REPORT.md. Returns the leaderboard."""
    import pandas as pd

    from bench.cache import atomic_path, atomic_write_text
    from bench.report import leaderboard

    board = leaderboard(pd.concat(per_utt, ignore_index=True), pd.DataFrame(cell_rows), n_boot=n_boot, seed=0)
    with atomic_path(out / "leaderboard.csv") as tmp:
        board.to_csv(tmp, index=False)
    atomic_write_text(out / "leaderboard.md", _markdown_report(name, board, common, argv))
    if figures:
        _draw(out)
    return board


def _draw(run_dir: Path) -> None:
    """Figures, REPORT.md and report.html of a run; one that cannot be drawn is a warning, never a
    lost run."""
    try:
        from bench.figures import draw_all
        from bench.report_html import write_html
        from bench.report_md import write_report

        draw_all(run_dir)
        write_report(run_dir)
        write_html(run_dir)
    except Exception as exc:  # noqa: BLE001
        logging.warning("figures failed (%s: %s); redraw with python -m bench.figures --run %s",
                        type(exc).__name__, exc, run_dir)


def run_grid(name: str, cells: list, out: Path, progress: bool = True, n_boot: int | None = None,
             argv: list[str] | None = None, grid_path: str = "", figures: bool = True) -> int:
    """Run every cell, writing results after each one into ``<out>/../.<name>.partial``, which
    replaces ``out`` once the leaderboard is written (an interrupted run leaves ``out`` as it
    was; see ``bench.output`` for what is replaced and when). ``out`` is checked before anything
    is computed, and one run at a time writes it (a second is refused). Returns the exit code."""
    from bench.harness import pick_device, set_threads
    from bench.output import check_out, lock_path, output_lock, ready

    first = cells[0].config
    try:
        device = pick_device(first.device)
    except (RuntimeError, ValueError) as exc:
        return _fail(str(exc))
    set_threads()
    problem = ready(out)
    if problem:
        return _fail(problem)
    with output_lock(out) as held:
        if not held:
            return _fail(f"another run is writing {out} (it holds {lock_path(out)}): wait for it to finish, "
                         "or give another --out")
        problem = check_out(out)  # as it is now that no other run can change it
        if problem:
            return _fail(problem)
        return _run_locked(name, cells, out, device, progress, n_boot, argv, grid_path, figures)


def _fresh_partial(final: Path) -> Path:
    """The empty partial folder of ``final`` (a run that died mid-swap has its previous results put
    back first)."""
    import shutil

    from bench.output import restore_previous

    if restore_previous(final):
        logging.warning("%s was restored from the previous results a run left mid-swap", final)
    work = partial_dir(final)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work


def _run_locked(name: str, cells: list, final: Path, device: str, progress: bool, n_boot: int | None,
                argv: list[str] | None, grid_path: str, figures: bool) -> int:
    """``run_grid`` once ``final`` is checked and locked."""
    from bench.cache import Cache, default_root
    from bench.output import place
    from bench.pipeline import Pipeline
    from bench.report import provenance, write_json

    first = cells[0].config
    out = _fresh_partial(final)
    cache = Cache(default_root(first.cache_dir))
    pipe = Pipeline(cache, device=device, progress=progress)
    common = provenance(device)
    write_json(out / "provenance.json", {
        "grid": name, "grid_file": grid_path, "argv": argv, "cache_root": str(cache.root), "cells": len(cells),
        **common,
    })
    ids, cells, by_key = _unique_cells(cells)
    tables: dict[str, list] = {"per_utt": [], "cell_rows": [], "traj_rows": [], "failures": []}
    t0 = time.time()
    problem = _load_corpora(pipe, cells, first, progress)
    if problem:
        return _fail(problem)
    _mixture_cell(pipe, first, common, out, tables)
    _run_cells(name, pipe, cells, ids, by_key, common, out, tables, progress)

    per_utt = tables["per_utt"]
    if not any(r["cell_id"] != "mixture" for r in tables["cell_rows"]):
        return _fail(f"no cell completed; see the errors above (previous results in {final}, if any, are untouched)",
                     EXIT_CELL_FAILED)
    if figures:  # the example stream and corpus hashes the reports show
        from bench.report_assets import save_assets

        save_assets(pipe, {k: c.config for k, c in by_key.items()}, out)
    board = write_board(out, name, per_utt, tables["cell_rows"], n_boot or first.eval.n_bootstrap, common, argv,
                        figures)
    placed = place(out, final, len(tables["failures"]))
    return _print_outcome(name, board, len(cells), t0, placed, tables["failures"], kept=final if placed != final else None)


def _unique_cells(cells: list) -> tuple[dict[int, str], list, dict[str, Any]]:
    """``(ids, cells, by_key)``: each cell's id (the hash of its evaluation slice), the cells with
    one per id (cells whose evaluation is the same, a non-personalized backbone under two
    embedding switches say, run once) and the cell of each id."""
    from bench.cache import config_hash
    from bench.pipeline import eval_slice

    ids = {id(c): config_hash(eval_slice(c.config)) for c in cells}
    unique: dict[str, Any] = {}
    for c in cells:
        unique.setdefault(ids[id(c)], c)
    cells = list(unique.values())
    by_key = {ids[id(c)]: c for c in cells}
    return ids, cells, by_key


def _load_corpora(pipe: Any, cells: list, first: Any, progress: bool) -> str:
    """Load and validate every corpus once, before any cell (a bad corpus is one message, returned),
    then train the cells' stages in parallel where possible; "" when all is well."""
    from bench.data.validate import CorpusError

    try:
        for c in cells:
            pipe.corpus(c.config)
            pipe.test_corpus(c.config)
    except (CorpusError, OSError, ValueError) as exc:
        return str(exc)
    try:
        prefetch(pipe, cells, workers=_workers(first), progress=progress)
    except Exception as exc:  # noqa: BLE001 - the cells retry their stages serially and report
        logging.warning("parallel stage training failed (%s: %s); cells will train serially", type(exc).__name__, exc)
    return ""


def _mixture_cell(pipe: Any, first: Any, common: dict, out: Path, tables: dict[str, list]) -> None:
    """The unprocessed mixture's rows (a failure is reported and the run goes on)."""
    try:
        mix = pipe.mixture_rows(first)
        mix.insert(0, "cell_id", "mixture")
        tables["per_utt"].append(mix)
        tables["cell_rows"].append(mixture_cell_row(common))
        write_tables(out, tables["per_utt"], tables["cell_rows"], tables["traj_rows"])
    except Exception as exc:  # noqa: BLE001 - reported, run continues with the systems
        tables["failures"].append(("mixture", f"{type(exc).__name__}: {exc}"))
        logging.error("mixture metrics failed: %s", exc)


def _run_cells(name: str, pipe: Any, cells: list, ids: dict[int, str], by_key: dict[str, Any], common: dict,
               out: Path, tables: dict[str, list], progress: bool) -> None:
    """Evaluate every cell, writing the tables after each one; one bad cell never loses the others."""
    from tqdm import tqdm

    per_utt, cell_rows, traj_rows, failures = (tables[k] for k in ("per_utt", "cell_rows", "traj_rows", "failures"))
    bar = tqdm(cells, desc=f"{name}: cells", unit="cell", disable=not progress)
    for cell in bar:
        cfg = cell.config
        cid = ids[id(cell)]
        bar.set_postfix_str(_describe(cfg)[:60])
        try:
            res = pipe.evaluate(cfg)
        except Exception as exc:  # noqa: BLE001 - one bad cell must not lose the others
            failures.append((_describe(cfg), f"{type(exc).__name__}: {exc}"))
            logging.error("cell failed (%s): %s: %s", _describe(cfg), type(exc).__name__, exc)
            logging.debug(traceback.format_exc())
            continue
        rows = res.rows.copy()
        rows.insert(0, "cell_id", cid)
        per_utt.append(rows)
        cell_rows.append(_cell_row(cfg, cid, res.info, cell_links(cfg, by_key), common))
        traj_rows.extend(_trajectory_rows(cid, cell_rows[-1], res.info))
        write_tables(out, per_utt, cell_rows, traj_rows)
    bar.close()


def _print_outcome(name: str, board: Any, n_cells: int, t0: float, final: Path,
                   failures: list[tuple[str, str]], kept: Path | None = None) -> int:
    """The pooled summary, headroom and failures on the console; the exit code. ``kept``: the
    results folder whose complete leaderboard this run (written to ``final``) left in place."""
    from bench.report import summary_table

    print()
    print(f"== {name}: pooled over conditions ({n_cells} cells, {time.time() - t0:.0f} s) ==")
    print(summary_table(board, "all"))
    _print_headroom(board)
    print(f"\nleaderboard: {final / 'leaderboard.csv'}")
    if kept is not None:
        print(f"\n{kept} holds a complete leaderboard and is kept; this run, with failed cells, is in {final}",
              file=sys.stderr)
    if failures:
        print(f"\n{len(failures)} cell(s) failed; completed cells are saved:", file=sys.stderr)
        for what, err in failures:
            print(f"  - {what}: {err}", file=sys.stderr)
        return EXIT_CELL_FAILED
    return 0


def _workers(cfg) -> int:
    import os

    return int(os.environ.get("PSE_KD_WORKERS", "0")) or max(1, min(cfg.eval.workers, os.cpu_count() or 1))


def _stage_worker(kind: str, cfg_dict: dict, cache_root: str, device: str = "cpu", threads: int = 1) -> str:
    """Train one backbone or student in a worker process (``threads`` torch threads; one on a CPU)
    on ``device`` into the cache."""
    from bench.cache import Cache
    from bench.config import ExperimentConfig
    from bench.harness import set_threads
    from bench.pipeline import Pipeline

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


def prefetch(pipe, cells: list, workers: int, progress: bool = True) -> None:
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
        if uses_student(cfg):
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


def _trajectory_rows(cell_id: str, cell: dict[str, Any], info: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``trajectory.csv``: per cell, condition and block, the mean cosine between the
    embedding used for that block and the teacher embedding of the clean target."""
    block_s = float(info.get("block_s", float("nan")))
    keep = ("system", "role", "loss", "alpha", "rule", "seed")
    return [{"cell_id": cell_id, **{k: cell.get(k) for k in keep}, "condition": cond, "block": k,
             "t_s": k * block_s, "cos_to_target": float(c)}
            for cond, series in (info.get("trajectory") or {}).items() for k, c in enumerate(series)]


def _print_headroom(board) -> None:
    """Per condition: the headroom (ceiling refiner, i.e. the teacher on the clean target's blocks,
    minus static; and the clean-target reference minus static) and the best system's paired gain
    over static and over the shrink control."""
    import numpy as np

    per = board[board["condition"] != "all"]
    if "role" not in per or "d_si_sdr_mean" not in per:
        return
    ceil = per[per["role"] == "ceiling"]
    refs = per[per["role"] == "reference"]
    systems = per[per["role"] == "system"].dropna(subset=["d_si_sdr_mean"])
    if ceil.empty and refs.empty:
        return
    print("\nper condition, SI-SDR dB vs static [95 % CI]; ceiling = teacher on the clean target's blocks")
    print("(per rate), reference = fixed embedding of the clean target; best system = largest mean gain")

    def fmt(r, col="d_si_sdr"):
        return f"{r[col + '_mean']:+.2f} [{r[col + '_ci_lo']:+.2f}, {r[col + '_ci_hi']:+.2f}]"

    for cond in dict.fromkeys(per["condition"]):
        parts = [f"  {cond:<15}"]
        for _, r in refs[refs["condition"] == cond].iterrows():
            if np.isfinite(r["d_si_sdr_mean"]):
                parts.append(f"{r['system']} {fmt(r)}")
        for _, r in ceil[ceil["condition"] == cond].iterrows():
            parts.append(f"ceiling a={r['alpha']} {fmt(r)}")
        sub = systems[systems["condition"] == cond]
        if not sub.empty:
            b = sub.loc[sub["d_si_sdr_mean"].idxmax()]
            tag = f"{b['system']} a={b['alpha']}" + (f" seed={b['seed']}" if str(b.get("seed", "")) not in ("", "nan") else "")
            vs = f" vs shrink {fmt(b, 'ds_si_sdr')}" if "ds_si_sdr_mean" in b and np.isfinite(b["ds_si_sdr_mean"]) else ""
            parts.append(f"best {tag}: {fmt(b)}{vs}")
        print("; ".join(parts))


def _markdown_report(name: str, board, common: dict[str, Any], argv: list[str] | None) -> str:
    from bench.report import markdown_table
    from bench.report_md import md_text

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


if __name__ == "__main__":
    raise SystemExit(main())
