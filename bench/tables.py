"""The paired-gain table of a finished run, as Markdown, for READMEs (never copied by hand).

``python -m bench.tables --run results/coherent_confirm [--metric si_sdr] [--systems a,b]``;
``--pair A B`` prints instead the paired difference of two cells (:func:`paired_table`), ``--cost``
the pooled gains of each refiner beside its parameters and MACs (:func:`cost_table`);
``--update FILE [--check]`` regenerates (or checks) every block of a Markdown file written between
``<!-- bench.tables ARGS -->`` and ``<!-- /bench.tables -->`` from its ARGS.

One row per refining cell (role ``system``) and comparison: the paired gain over static
(``d_<metric>``), over its ``shrink`` control (``ds_<metric>``) and, for a cell of the
student-space reading (and that space's static), over the teacher space's static
(``dt_<metric>``), one column per condition and
the pooled ``all``: ``mean [CI]``, bold where the 95 % CI lies above 0, a ``*`` where the
Holm-corrected p-value (the run's family) is below 0.05. The cell's distinguishing settings
(alpha, steps, size, inference) follow its system name where the run varies them.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.metrics.stats import LEVEL

# settings that can tell two cells of one system apart, with their short names
SETTINGS = (("teacher", "teacher"), ("alpha", "alpha"), ("distill_steps", "steps"), ("student_params", "params"),
            ("student_mode", ""), ("seed", "seed"))


def _metric_unit(metric: str) -> tuple[str, int]:
    """``(unit, decimals)`` a table of ``metric`` is written with: SI-SDR in dB; STOI and ESTOI, whose
    gains are thousandths, with three decimals; PESQ and the MOS scores (no unit) with two."""
    base = metric.removeprefix("late_")
    if base.startswith("si_sdr"):
        return " (dB)", 2
    return "", 3 if base in ("stoi", "estoi") else 2


def _ci_text(m: float, lo: float, hi: float, decimals: int) -> str:
    return f"{m:+.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"


def paired_cell(d: np.ndarray, clusters: np.ndarray | None, decimals: int, n_boot: int = 1000, seed: int = 0,
                level: float = 0.95) -> tuple[str, float, float]:
    """``mean [CI]`` of the paired differences ``d``, bold where the CI excludes 0, and the CI:
    whole clusters resampled when ``clusters`` is given (a pooled column), single rows otherwise.
    One value has no CI: its mean alone."""
    from bench.metrics.stats import bootstrap_mean, cluster_bootstrap_mean

    m, lo, hi = (cluster_bootstrap_mean(d, clusters, n_boot, seed, level) if clusters is not None
                 else bootstrap_mean(d, n_boot, seed, level))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{m:+.{decimals}f}", lo, hi
    text = _ci_text(m, lo, hi, decimals)
    return (f"**{text}**" if lo > 0 or hi < 0 else text), lo, hi


def _fmt(row: pd.Series, col: str, decimals: int = 2) -> str:
    m, lo, hi = (row.get(f"{col}_{s}", np.nan) for s in ("mean", "ci_lo", "ci_hi"))
    if not np.isfinite(m):
        return ""
    text = _ci_text(m, lo, hi, decimals)
    if np.isfinite(lo) and lo > 0:
        text = f"**{text}**"
    p = row.get(f"p_{col}_holm", np.nan)
    return text + ("\\*" if np.isfinite(p) and p < 0.05 else "")


def _label(row: pd.Series, varies: list[tuple[str, str]]) -> str:
    parts = [str(row["system"])]
    for col, short in varies:
        v = row.get(col)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        parts.append(f"{short} {v}".strip())
    return ", ".join(parts)


def _need_metric(board: pd.DataFrame, metric: str) -> None:
    """ValueError naming the metrics ``board`` has when it has no paired ``d_<metric>`` column."""
    if f"d_{metric}_mean" not in board:
        raise ValueError(f"the leaderboard has no d_{metric}_mean column; metrics there: "
                         f"{', '.join(sorted(c[2:-5] for c in board if c.startswith('d_') and c.endswith('_mean')))}")


def _keep(cells: pd.DataFrame, systems: list[str] | None) -> pd.DataFrame:
    """The rows of ``cells`` of ``systems`` (all when none given); ValueError naming the choices
    when one is not a refining system there."""
    if not systems:
        return cells
    unknown = sorted(set(systems) - set(cells["system"]))
    if unknown:
        raise ValueError(f"no refining cell of system {', '.join(unknown)}; systems: "
                         f"{', '.join(sorted(set(cells['system'])))}")
    return cells[cells["system"].isin(systems)]


def gain_table(board: pd.DataFrame, metric: str = "si_sdr", systems: list[str] | None = None) -> str:
    """The Markdown table (see the module docstring) of ``board``, a run's leaderboard."""
    _need_metric(board, metric)
    conds = [c for c in dict.fromkeys(board["condition"]) if c != "all"] + ["all"]
    # refiners, and each student space's static (compared with the teacher space's static)
    dt = pd.to_numeric(board.get(f"dt_{metric}_mean", pd.Series(np.nan, index=board.index)), errors="coerce")
    cells = _keep(board[(board["role"] == "system") | ((board["role"] == "baseline") & np.isfinite(dt))], systems)
    varies = [(c, s) for c, s in SETTINGS if c in cells and cells.groupby("system")[c].nunique().gt(1).any()]
    unit, decimals = _metric_unit(metric)
    lines = [f"| {metric} gain{unit} | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|"]
    for _, group in cells.groupby("cell_id", sort=False):
        by_cond = group.set_index("condition")
        first = group.iloc[0]
        for col, what in ((f"d_{metric}", "static"), (f"ds_{metric}", "shrink"), (f"dt_{metric}", "teacher-space static")):
            if f"{col}_mean" not in board:
                continue
            vals = [_fmt(by_cond.loc[c], col, decimals) if c in by_cond.index else "" for c in conds]
            if not any(vals):
                continue
            lines.append(f"| {_label(first, varies)} - {what} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _num(v: object) -> float:
    """A leaderboard value as a number (NaN when empty or not numeric)."""
    return float(pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0])


def _count(v: object) -> str:
    """A parameter or MAC count in k / M / G ("" when unknown)."""
    x = _num(v)
    if not np.isfinite(x):
        return ""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.0f}"


def cost_table(board: pd.DataFrame, metric: str = "si_sdr", systems: list[str] | None = None) -> str:
    """Which refiner wins in which reading, at what cost: one row per refining cell (role
    ``system``) with its reading, its pooled (``condition == all``) paired gain over its own
    static, its ``shrink`` and (student-space cells) the teacher space's static, and what it runs:
    the backbone's parameters, the encoder that embeds the enrollment (the teacher, or the student
    in the student-space reading), the encoder that re-embeds each block (the student; the teacher
    for the teacher oracle; nothing more when it is the enrollment's encoder itself), and the total
    MACs per second of audio (backbone + refiner; the enrollment is embedded once and not counted)."""
    _need_metric(board, metric)
    pooled = _keep(board[(board["condition"] == "all") & (board["role"] == "system")], systems)
    head = ["cell", "reading", "vs static", "vs shrink", "vs teacher-space static", "backbone params",
            "enrollment encoder", "per-block encoder", "total MACs/s"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for _, row in pooled.iterrows():
        student_space = str(row.get("reading", "teacher")) == "student"
        if student_space:
            per_block = "(the same)"
        elif _num(row.get("student_params")) > 0:  # NaN > 0 is False
            per_block = _count(row["student_params"])
        elif _num(row.get("extra_macs_per_s")) > 0:
            per_block = _count(row.get("teacher_params")) + " (teacher)"
        else:
            per_block = "-"
        own = pooled[pooled["system"] == row["system"]]  # the settings that tell this system's cells apart
        label = _label(row, [(c, t) for c, t in SETTINGS if c in own and own[c].nunique() > 1])
        cols = [label, "student" if student_space else "teacher",
                *(_fmt(row, f"{d}_{metric}", _metric_unit(metric)[1]) for d in ("d", "ds", "dt")),
                _count(row.get("pse_params")), _count(row.get("teacher_params")), per_block,
                _count(row.get("total_macs_per_s"))]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def _select(cells: pd.DataFrame, spec: str) -> str:
    """The one cell id ``spec`` names: ``SYSTEM[,COLUMN=VALUE ...]`` over ``cells.csv`` columns
    (e.g. ``static,teacher=vfl``); ValueError naming the matches when not exactly one."""
    system, *conds = [p.strip() for p in spec.split(",")]
    m = cells["system"].astype(str) == system
    for c in conds:
        col, _, val = c.partition("=")
        if col not in cells:
            raise ValueError(f"--pair {spec!r}: no column {col!r} in cells.csv")
        m &= cells[col].astype(str) == val
    ids = cells.loc[m, "cell_id"].astype(str).tolist()
    if len(ids) != 1:
        raise ValueError(f"--pair {spec!r} names {len(ids)} cells (need exactly one); add COLUMN=VALUE parts "
                         f"(e.g. teacher=..., alpha=...)")
    return ids[0]


def _cluster_sums(d: np.ndarray, cl: np.ndarray) -> np.ndarray:
    """The summed paired difference of each test mixture (its rows in every condition): their
    signed total over the row count is the pooled mean, so flipping whole sums tests that mean."""
    ok = np.isfinite(d)
    frame = pd.DataFrame({"d": d[ok], "cl": cl[ok]})
    return frame.groupby("cl", sort=True)["d"].sum().to_numpy()


def paired_table(per: pd.DataFrame, cells: pd.DataFrame, pairs: list[tuple[str, str]], metric: str = "si_sdr",
                 n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> str:
    """Markdown rows of the paired differences ``a - b`` of each ``(a, b)`` of ``pairs`` (cell
    specs, see :func:`_select`) on the
    mixtures both were scored on: per condition and pooled (whole mixtures resampled), ``mean [CI]``
    with the Wilcoxon p per condition, the suite's bootstrap (``bench.report``).

    With more than one pair, the pooled column also gives each
    pair's p, a sign-flip permutation test of the pooled mean, each test mixture's rows flipped
    together (a mixture scored under several conditions is one unit, as in the pooled CI's
    resampling; the mean the CI describes, where conditions of opposite sign make a median test
    say little),
    Holm-corrected over the pairs of the table (the family a plan names by listing them).
    ``level``: the CIs' confidence level (a plan that corrects for earlier looks at the same
    items asks for more than the suite's 0.95); the header names it when it is another."""
    if not 0.5 <= level < 1:
        raise ValueError(f"--level {level}: give a confidence level in [0.5, 1), e.g. 0.95 or 0.983")
    from bench.metrics.stats import holm, paired_p, sign_flip_p
    from bench.report import _paired

    unit, decimals = _metric_unit(metric)
    rows, pooled_p, conds = [], [], None
    for pa_spec, pb_spec in pairs:
        ia, ib = _select(cells, pa_spec), _select(cells, pb_spec)
        pa, pb = per[per["cell_id"].astype(str) == ia], per[per["cell_id"].astype(str) == ib]
        these = list(dict.fromkeys(pa["condition"]))
        if conds is None:
            conds = these
        elif these != conds:
            raise ValueError(f"--pair {pa_spec!r} was scored on {these}, the first pair on {conds}")
        vals = []
        for cond in [*conds, "all"]:
            sa, sb = (pa, pb) if cond == "all" else (pa[pa["condition"] == cond], pb[pb["condition"] == cond])
            d, cl = _paired(sa, sb, metric)
            text, _, _ = paired_cell(d, cl if cond == "all" else None, decimals, n_boot, seed, level)
            n = int(np.isfinite(d).sum())  # the items both were scored on (a slow metric: its subset)
            vals.append(text + ("" if cond == "all" else f" (p {paired_p(d):.2g}, n {n})"))
            if cond == "all":
                pooled_p.append(sign_flip_p(_cluster_sums(d, cl)))
        rows.append([f"{pa_spec} - {pb_spec}", *vals])
    if len(pairs) > 1:
        for row, p in zip(rows, holm(pooled_p), strict=True):
            row[-1] += f" (p Holm {p:.2g})"
    conds = conds or []
    ci = "" if level == LEVEL else f", {100 * level:g} % CI"
    head = f"| {metric}{unit}{ci} | " + " | ".join([*conds, "all"]) + " |"
    return "\n".join([head, "|---" * (len(conds) + 2) + "|", *("| " + " | ".join(r) + " |" for r in rows)])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.tables", description=__doc__.splitlines()[0])
    p.add_argument("--run", default="", help="a run folder holding leaderboard.csv")
    p.add_argument("--metric", default="si_sdr", help="si_sdr (default), late_si_sdr, pesq, ...")
    p.add_argument("--systems", default="", help="comma-separated system names to keep (default: all)")
    p.add_argument("--pair", nargs=2, metavar=("A", "B"), default=None, action="append",
                   help="instead: the paired difference A - B of two cells, each SYSTEM[,COLUMN=VALUE ...] of "
                        "cells.csv (e.g. --pair static,teacher=vfl static,teacher=ge2e); repeat it for one "
                        "table of several pairs, the pooled p Holm-corrected over them")
    p.add_argument("--level", type=float, default=LEVEL,
                   help=f"with --pair: the CIs' confidence level (default {LEVEL}; bold where the CI excludes 0)")
    p.add_argument("--cost", action="store_true",
                   help="instead: one row per refining cell with its reading, its pooled gain over static, shrink "
                        "and the teacher space's static, and its parameters and MACs per second")
    p.add_argument("--update", nargs="+", default=None, metavar="FILE",
                   help="instead: regenerate, in each Markdown FILE, every block between "
                        "'<!-- bench.tables ARGS -->' and '<!-- /bench.tables -->' from its ARGS")
    p.add_argument("--check", action="store_true",
                   help="with --update: change nothing, exit 1 naming each block that differs from its ARGS' table")
    return p


def render(args: argparse.Namespace) -> str:
    """The table ``args`` ask for (ValueError / FileNotFoundError on a bad run or cell)."""
    path = Path(args.run) / "leaderboard.csv"
    if not args.run or not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run python -m bench.run first")
    if args.pair:
        per, cells = (pd.read_csv(Path(args.run) / f) for f in ("per_utterance.csv", "cells.csv"))
        return paired_table(per, cells, [tuple(q) for q in args.pair], metric=args.metric, level=args.level)
    if args.level != LEVEL:
        raise ValueError("--level applies to --pair tables only")
    table = cost_table if args.cost else gain_table
    return table(pd.read_csv(path), args.metric, [s for s in args.systems.split(",") if s])


BLOCK = re.compile(r"(<!-- bench\.tables (?P<args>.*?) -->\n)(?P<body>.*?)(<!-- /bench\.tables -->)", re.S)


def update(text: str, root: Path) -> tuple[str, list[str]]:
    """``text`` with every generated block regenerated (run folders relative to ``root``), and
    the ARGS of the blocks whose body changed."""
    changed: list[str] = []

    def one(m: re.Match) -> str:
        args = build_parser().parse_args(shlex.split(m["args"]))
        if args.run and not Path(args.run).is_absolute():
            args.run = str(root / args.run)
        body = render(args).rstrip("\n") + "\n"
        if body != m["body"]:
            changed.append(m["args"])
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(one, text), changed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.update:
            stale = []
            for f in args.update:
                path = Path(f)
                text = path.read_text()
                new, changed = update(text, Path.cwd())
                stale += [f"{f}: {c}" for c in changed]
                if changed and not args.check:
                    path.write_text(new)
            for s in stale:
                print(("differs: " if args.check else "updated: ") + s)
            return 1 if stale and args.check else 0
        if not args.run:
            print("error: give --run RUN (or --update FILE)", file=sys.stderr)
            return 2
        print(render(args))
    except (ValueError, FileNotFoundError, SystemExit) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
