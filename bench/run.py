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
from pathlib import Path
from typing import Any

from bench.grid import (
    EXIT_CELL_FAILED,
    cell_links,
    cell_row,
    describe,
    fail,
    mixture_cell_row,
    prefetch,
    stage_workers,
    trajectory_rows,
    with_baselines,
    write_board,
    write_tables,
)
from bench.output import partial_dir


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bench.config import ConfigError, Grid
    from bench.registry import RegistryError, load_modules

    try:
        load_modules(args.plugins)
    except RegistryError as exc:
        return fail(str(exc))
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.cache_dir:
        overrides.append(f"cache_dir={args.cache_dir}")
    try:
        grid = Grid.load(args.grid, overrides=overrides)
        cells = grid.cells()
    except (ConfigError, RegistryError) as exc:
        return fail(str(exc))
    if args.bootstrap is not None and args.bootstrap < 1:
        return fail(f"--bootstrap={args.bootstrap} is out of range: give at least 1 resample (1000 is usual)")
    cells = with_baselines(cells, grid.implicit)
    from bench.output import check_out, resolve_out

    out = resolve_out(Path(args.out) if args.out else Path("results") / grid.name)
    problem = check_out(out)
    if problem:
        return fail(problem)
    if args.dry_run:
        for c in cells:
            print(describe(c.config))
        print(f"{len(cells)} cells; output would go to {out}")
        return 0
    if args.board_only and not args.storage:
        return fail("--board-only needs --storage URL (the study the workers share)")
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


def run_grid(name: str, cells: list, out: Path, progress: bool = True, n_boot: int | None = None,
             argv: list[str] | None = None, grid_path: str = "", figures: bool = True) -> int:
    """Run every cell, writing results after each one into ``<out>/../.<name>.partial``, which
    replaces ``out`` once the leaderboard is written (an interrupted run leaves ``out`` as it
    was; see ``bench.output`` for what is replaced and when). ``out`` is checked before anything
    is computed, and one run at a time writes it (a second is refused). Returns the exit code."""
    from bench.output import check_out, lock_path, output_lock, ready
    from bench.runtime import pick_device, set_threads

    first = cells[0].config
    try:
        device = pick_device(first.device)
    except (RuntimeError, ValueError) as exc:
        return fail(str(exc))
    set_threads()
    problem = ready(out)
    if problem:
        return fail(problem)
    with output_lock(out) as held:
        if not held:
            return fail(f"another run is writing {out} (it holds {lock_path(out)}): wait for it to finish, "
                         "or give another --out")
        problem = check_out(out)  # as it is now that no other run can change it
        if problem:
            return fail(problem)
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
        return fail(problem)
    _mixture_cell(pipe, first, common, out, tables)
    _run_cells(name, pipe, cells, ids, by_key, common, out, tables, progress)

    per_utt = tables["per_utt"]
    if not any(r["cell_id"] != "mixture" for r in tables["cell_rows"]):
        return fail(f"no cell completed; see the errors above (previous results in {final}, if any, are untouched)",
                     EXIT_CELL_FAILED)
    if figures:  # the example stream and corpus hashes the reports show
        from bench.report.assets import save_assets

        save_assets(pipe, {k: c.config for k, c in by_key.items()}, out)
    board = write_board(out, name, per_utt, tables["cell_rows"], n_boot or first.eval.n_bootstrap, common, argv,
                        figures, shown_as=final)
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
        prefetch(pipe, cells, workers=stage_workers(first), progress=progress)
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
        bar.set_postfix_str(describe(cfg)[:60])
        try:
            res = pipe.evaluate(cfg)
        except Exception as exc:  # noqa: BLE001 - one bad cell must not lose the others
            failures.append((describe(cfg), f"{type(exc).__name__}: {exc}"))
            logging.error("cell failed (%s): %s: %s", describe(cfg), type(exc).__name__, exc)
            logging.debug(traceback.format_exc())
            continue
        rows = res.rows.copy()
        rows.insert(0, "cell_id", cid)
        per_utt.append(rows)
        cell_rows.append(cell_row(cfg, cid, res.info, cell_links(cfg, by_key), common))
        traj_rows.extend(trajectory_rows(cid, cell_rows[-1], res.info))
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


if __name__ == "__main__":
    raise SystemExit(main())
