"""Where a paired gain comes from: ``A - B`` of a finished run broken down by what each test
mixture holds.

``python -m bench.breakdown --run results/field_limit_confirm --pair static nonpersonalized
[--metric si_sdr] [--by kind|sir_db|snr_db] [--bins 0,5,10,15,20]``

The mixtures' own levels are not in ``per_utterance.csv``; they are read back from the run's
test sets (the cache, rebuilt when absent) of the grid and ``--set`` overrides the run's
``provenance.json`` records. Before anything is reported the mixture's SI-SDR recomputed from
those sets must equal the run's (when it scored the mixture), so a set that is not the run's is
refused. Groups: ``kind`` (noise only, talker only, both: what the mixture adds to the target),
or bins of ``sir_db`` / ``snr_db`` (mixtures without an interferer / noise fall outside them).
One row per group, one column per condition and the pooled ``all`` (whole mixtures resampled, as
in ``bench.tables``): ``mean [CI] (n)``, bold where the 95 % CI excludes 0. A post-hoc reading:
no group was chosen before the run, so no p-values are given.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

BY = ("kind", "sir_db", "snr_db")
KINDS = ("noise only", "talker only", "both")
DEFAULT_BINS = (0.0, 5.0, 10.0, 15.0, 20.0)


def mixture_kind(meta: dict[str, Any]) -> str:
    """What the mixture adds to the target: ``noise only``, ``talker only`` or ``both``."""
    talker, noise = meta.get("sir_db") is not None, meta.get("snr_db") is not None
    if talker and noise:
        return "both"
    return "talker only" if talker else "noise only" if noise else "neither"


def groups(metas: dict[str, list[dict[str, Any]]], by: str, bins: Sequence[float]) -> pd.DataFrame:
    """``condition, utt, group`` of every mixture in ``metas`` (condition -> each mixture's meta)."""
    if by not in BY:
        raise ValueError(f"--by {by!r} is not one of {', '.join(BY)}")
    edges = sorted(float(b) for b in bins)
    if by != "kind" and len(edges) < 2:
        raise ValueError(f"--bins needs at least two edges, got {list(bins)}")
    rows = []
    for cond, ms in metas.items():
        for i, meta in enumerate(ms):
            if by == "kind":
                g = mixture_kind(meta)
            else:
                g = _bin(meta.get(by), edges, by)
            rows.append({"condition": cond, "utt": i, "group": g})
    return pd.DataFrame(rows)


def _bin(value: Any, edges: list[float], by: str) -> str:
    """The bin ``[a, b)`` of ``value`` (the last bin holds its upper edge), ``no SIR`` / ``no SNR``
    for a mixture without an interferer / noise, ``outside`` beyond the edges."""
    if value is None:
        return f"no {by.removesuffix('_db').upper()}"
    v = float(value)
    k = len(edges) - 2 if v == edges[-1] else int(np.searchsorted(edges, v, side="right")) - 1
    return f"{edges[k]:g}..{edges[k + 1]:g} dB" if 0 <= k < len(edges) - 1 else "outside"


def _order(by: str, present: list[str], bins: Sequence[float]) -> list[str]:
    if by == "kind":
        return [k for k in (*KINDS, "neither") if k in present]
    edges = sorted(float(b) for b in bins)
    names = [f"{a:g}..{b:g} dB" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return [g for g in names if g in present] + [g for g in present if g not in names]


def breakdown_table(per: pd.DataFrame, cells: pd.DataFrame, pair: tuple[str, str], grouping: pd.DataFrame,
                    metric: str = "si_sdr", by: str = "kind", bins: Sequence[float] = DEFAULT_BINS,
                    n_boot: int = 1000, seed: int = 0) -> str:
    """The Markdown table (module docstring) of ``pair``'s paired ``metric`` difference per group."""
    from bench.report import _clusters
    from bench.tables import _metric_unit, _select, paired_cell

    if metric not in per:
        raise ValueError(f"metric {metric!r} is not a column of per_utterance.csv")
    ia, ib = (_select(cells, s) for s in pair)
    a, b = (per[per["cell_id"].astype(str) == i][["condition", "utt", metric]] for i in (ia, ib))
    j = a.merge(b, on=["condition", "utt"], suffixes=("_a", "_b")).merge(grouping, on=["condition", "utt"], how="left")
    j["d"] = j[f"{metric}_a"] - j[f"{metric}_b"]
    j = j[np.isfinite(j["d"].to_numpy(dtype=float))]
    conds = list(dict.fromkeys(j["condition"]))
    unit, decimals = _metric_unit(metric)
    lines = [f"| {pair[0]} - {pair[1]}, {metric}{unit}, by {by} | " + " | ".join([*conds, "all"]) + " |",
             "|---" * (len(conds) + 2) + "|"]
    for g in _order(by, list(dict.fromkeys(j["group"].dropna())), bins):
        sub = j[j["group"] == g]
        vals = []
        for cond in [*conds, "all"]:
            s = sub if cond == "all" else sub[sub["condition"] == cond]
            if s.empty:
                vals.append("")
                continue
            text, _, _ = paired_cell(s["d"].to_numpy(dtype=float), _clusters(s) if cond == "all" else None,
                                     decimals, n_boot, seed)
            vals.append(f"{text} (n {len(s)})")
        lines.append(f"| {g} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _run_args(run: Path) -> tuple[str, list[str]]:
    """The grid file and ``--set`` overrides the run in ``run`` was started with."""
    prov = json.loads((run / "provenance.json").read_text())
    argv = [str(x) for x in prov.get("argv") or []]
    grid, sets = prov.get("grid_file") or "", []
    for flag, val in zip(argv, argv[1:], strict=False):
        if flag == "--grid":
            grid = val
        elif flag == "--set":
            sets.append(val)
    if not grid:
        raise ValueError(f"{run / 'provenance.json'} names no grid file")
    return grid, sets


def run_metas(run: Path, per: pd.DataFrame, cell_id: str,
              cache_dir: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Each condition's mixture metas of the run's cell ``cell_id`` (its test sets, from the cache
    or rebuilt), checked against the run's ``per`` (its per_utterance.csv)."""
    from bench.cache import Cache, default_root
    from bench.config import Grid
    from bench.grid import with_baselines
    from bench.pipeline import Pipeline
    from bench.run import _unique_cells

    grid_file, sets = _run_args(run)
    if cache_dir:
        sets.append(f"cache_dir={cache_dir}")
    grid = Grid.load(grid_file, overrides=sets)
    ids, cells, _ = _unique_cells(with_baselines(grid.cells(), grid.implicit))
    by_id = {ids[id(c)]: c for c in cells}
    if cell_id == "mixture":
        cell_id = next(iter(by_id))
    if cell_id not in by_id:
        raise ValueError(f"cell {cell_id} is not a cell of {grid_file} with {sets or 'no overrides'} as the code "
                         "is now (its key changed): its mixtures cannot be read back")
    cfg = by_id[cell_id].config
    pipe = Pipeline(Cache(default_root(cfg.cache_dir)), progress=False)
    out, checks = {}, {}
    for cond in cfg.eval.conditions:
        ms = pipe.eval_set(cfg, cond)
        out[cond] = [dict(m.meta) for m in ms]
        checks[cond] = ms
    _check_sets(per, checks)
    return out


def _check_sets(per: pd.DataFrame, sets: dict[str, list[Any]], tol_db: float = 0.01) -> None:
    """ValueError unless the mixture SI-SDR of ``sets`` equals the run's (``per``), mixture by mixture."""
    from bench.metrics.quality import si_sdr

    mix = per[per["cell_id"].astype(str) == "mixture"]
    for cond, ms in sets.items():
        got = mix[mix["condition"] == cond].set_index("utt")["si_sdr"]
        if got.empty:
            continue
        if len(got) != len(ms):
            raise ValueError(f"{cond}: the run scored {len(got)} mixtures, the test set now holds {len(ms)}")
        for i, m in enumerate(ms):
            v = si_sdr(m.mixture, m.target)
            if np.isfinite(got.loc[i]) and abs(v - got.loc[i]) > tol_db:
                raise ValueError(f"{cond} mixture {i}: SI-SDR {v:.3f} dB here, {got.loc[i]:.3f} dB in the run: "
                                 "the test set is not the run's")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished run folder (per_utterance.csv, cells.csv, provenance.json)")
    p.add_argument("--pair", nargs=2, metavar=("A", "B"), required=True,
                   help="the cells, each SYSTEM[,COLUMN=VALUE ...] of cells.csv (as bench.tables --pair)")
    p.add_argument("--metric", default="si_sdr", help="si_sdr (default), pesq, stoi, dnsmos_ovrl, ...")
    p.add_argument("--by", default="kind", choices=BY, help="kind (default), sir_db or snr_db")
    p.add_argument("--bins", default=",".join(f"{b:g}" for b in DEFAULT_BINS),
                   help="bin edges in dB for --by sir_db / snr_db (default 0,5,10,15,20)")
    p.add_argument("--cache-dir", default=None, help="artifact cache (default: $PSE_KD_CACHE or ~/.cache/pse-kd-bench)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = Path(args.run)
    try:
        bins = [float(x) for x in args.bins.split(",") if x.strip()]
    except ValueError:
        print(f"error: --bins {args.bins!r}: give comma-separated numbers, e.g. 0,5,10,15,20", file=sys.stderr)
        return 2
    try:
        per = pd.read_csv(run / "per_utterance.csv")
        cells = pd.read_csv(run / "cells.csv")
        from bench.tables import _select

        metas = run_metas(run, per, _select(cells, args.pair[0]), args.cache_dir)
        print(breakdown_table(per, cells, tuple(args.pair), groups(metas, args.by, bins), args.metric, args.by, bins))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
