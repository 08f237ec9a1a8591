"""Compare the metric columns of two leaderboards within a tolerance (e.g. a grid run on CUDA and on CPU).

``python -m bench.compare A/leaderboard.csv B/leaderboard.csv [--tol-db 0.5] [--tol 0.05]``

Rows are matched on ``cell_id`` and ``condition`` (the same grid gives the same cell ids on any
device). Compared: every numeric column both files have, except what measures the machine rather
than the models (``rtf``, ``batch_rtf``, ``block_ms_*``, latency, peak memory, wall times,
throughput), p-values (discrete, and
jumping between neighbouring values on a few mixtures), failure counts and ``recovered_*`` (a
ratio whose denominator can be near 0). Tolerance, absolute, per column: ``--tol-db`` for columns
in dB (names with ``sdr`` or ``headroom``), ``--tol`` for the others (PESQ, STOI, cosines, EER,
fractions); parameter and MAC counts must agree to ``--tol`` too. NaN equals NaN.

Prints, per column, the largest absolute difference, the row where it occurs and the verdict.
Exit status: 0 every column within tolerance, 1 some column over it, 2 the files cannot be
compared (unreadable, no key columns, rows of one missing in the other).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ("cell_id", "condition")
SKIP = re.compile(r"^(rtf|batch_rtf|block_ms|algo_latency|peak_mem|latency|lat_|wall|time|throughput|prep)|(_ms|_mb)$|^p_|_p$|_holm$|"
                  r"_failures$|^recovered|^n$|^n_seeds$|"
                  r"^(alpha|tau|block_s|gate_threshold|context_s|seed|n0|distill_steps|enh_emb_mix)$")  # config, not results
DB = re.compile(r"sdr|headroom")
TOL_DB = 0.5
TOL = 0.05


class CompareError(ValueError):
    """The two leaderboards cannot be compared (a message for the user)."""


@dataclass
class ColumnDiff:
    """The largest absolute difference of one column, where it occurs, and its tolerance."""

    column: str
    max_abs: float
    where: str
    tol: float
    mismatched_nan: int = 0

    @property
    def ok(self) -> bool:
        return self.mismatched_nan == 0 and not self.max_abs > self.tol


def _read(path: str | Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise CompareError(f"cannot read {path}: {exc}") from None
    missing = [k for k in KEYS if k not in df]
    if missing:
        raise CompareError(f"{path} has no column {missing[0]!r}; is it a leaderboard.csv?")
    if df.duplicated(list(KEYS)).any():
        raise CompareError(f"{path}: rows are not unique on {', '.join(KEYS)}")
    return df.set_index(list(KEYS))


def metric_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """The numeric columns both leaderboards have that measure the models, in ``a``'s order."""
    return [c for c in a.columns if c in b.columns and not SKIP.search(c)
            and pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c])]


def compare(a: pd.DataFrame, b: pd.DataFrame, tol_db: float = TOL_DB, tol: float = TOL) -> list[ColumnDiff]:
    """Per metric column, the largest absolute difference over the rows both share (all of them)."""
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    if len(only_a) or len(only_b):
        first = (list(only_a) + list(only_b))[0]
        raise CompareError(f"the leaderboards hold other rows: {len(only_a)} only in the first, {len(only_b)} only "
                           f"in the second (e.g. cell {first[0]}, condition {first[1]}); were they made by one grid?")
    b = b.loc[a.index]
    out = []
    for col in metric_columns(a, b):
        x, y = a[col].to_numpy(float), b[col].to_numpy(float)
        nan_x, nan_y = np.isnan(x), np.isnan(y)
        diff = np.where(nan_x | nan_y, 0.0, np.abs(x - y))
        i = int(np.argmax(diff)) if diff.size else 0
        where = f"{a.index[i][0]}/{a.index[i][1]}" if diff.size and diff[i] > 0 else ""
        out.append(ColumnDiff(col, float(diff.max()) if diff.size else 0.0, where,
                              tol_db if DB.search(col) else tol, int((nan_x != nan_y).sum())))
    return out


def report(diffs: list[ColumnDiff]) -> str:
    """A fixed-width table: column, max |a - b|, tolerance, verdict, where."""
    w = max([len(d.column) for d in diffs] + [6])
    lines = [f"{'column':<{w}}  {'max |a-b|':>11}  {'tol':>7}  verdict  where (cell/condition)"]
    for d in diffs:
        verdict = "ok" if d.ok else ("NaN" if d.mismatched_nan else "OVER")
        nan = f"  ({d.mismatched_nan} NaN in one only)" if d.mismatched_nan else ""
        lines.append(f"{d.column:<{w}}  {d.max_abs:>11.3g}  {d.tol:>7.3g}  {verdict:<7}  {d.where}{nan}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    p.add_argument("a", help="leaderboard.csv (e.g. the CUDA run's)")
    p.add_argument("b", help="leaderboard.csv (e.g. the CPU run's)")
    p.add_argument("--tol-db", type=float, default=TOL_DB, help=f"tolerance of dB columns (default {TOL_DB})")
    p.add_argument("--tol", type=float, default=TOL, help=f"tolerance of the other columns (default {TOL})")
    args = p.parse_args(argv)
    try:
        a, b = _read(args.a), _read(args.b)
        diffs = compare(a, b, args.tol_db, args.tol)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.a} vs {args.b}: {len(a)} rows, {len(diffs)} metric columns "
          f"(tolerance {args.tol_db:g} dB for SI-SDR columns, {args.tol:g} for the others)")
    print(report(diffs))
    over = [d for d in diffs if not d.ok]
    if over:
        print(f"\n{len(over)} column(s) over tolerance: {', '.join(d.column for d in over)}")
        return 1
    worst = max(diffs, key=lambda d: d.max_abs / d.tol if d.tol else d.max_abs, default=None)
    print("\nevery column within tolerance" + (f" (closest: {worst.column}, {worst.max_abs:.3g} of {worst.tol:g})"
                                                if worst else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
