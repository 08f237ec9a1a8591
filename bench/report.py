"""Leaderboard rows, paired deltas, headroom and provenance.

A leaderboard row is one system (baseline, or teacher x loss x tau x alpha x seed) on one
condition (or ``all`` pooled), with the mean and 95 % bootstrap CI of each metric, the paired
delta against the static-embedding baseline, failure counts, complexity and provenance.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

METRICS = ("si_sdr", "si_sdri", "pesq", "stoi", "estoi", "spk_cos")
DELTA_METRICS = ("si_sdr", "pesq", "stoi", "estoi")
PACKAGES = ("torch", "numpy", "pesq", "pystoi", "fvcore", "resemblyzer", "speechbrain", "nemo_toolkit",
            "transformers", "optuna")


def git_commit(root: str | Path | None = None) -> str:
    """Current git commit (with ``-dirty`` when tracked files have changes), or ``unknown``.

    Changes under ``results/`` do not count: they are this suite's own output (a run rewrites the
    committed reference results), not code or configuration that shapes the numbers."""
    root = Path(root or Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=root, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(device: str) -> dict[str, str]:
    """What every result file records about where it came from: commit, package versions,
    device and date (``bench.run`` rows and ``bench.sweep`` studies alike)."""
    from bench.harness import device_name
    from bench.pipeline import now

    return {"git_commit": git_commit(), "versions": versions(), "device": device_name(device), "date": now()}


def versions() -> str:
    """Compact ``pkg=version`` list of the packages that shape the numbers."""
    out = [f"python={platform.python_version()}"]
    for p in PACKAGES:
        try:
            out.append(f"{p}={metadata.version(p)}")
        except metadata.PackageNotFoundError:
            continue
    return " ".join(out)


def bootstrap_mean(x: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % percentile-bootstrap CI of ``x`` (NaN ignored); see ``bootstrap_ci``."""
    from bench.metrics.quality import bootstrap_ci

    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_ci(x, n_boot=n_boot, seed=seed)
    return float(x.mean()), lo, hi


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of means ``mean(num)/mean(den)`` over paired items, with a paired bootstrap CI."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    ok = np.isfinite(num) & np.isfinite(den)
    num, den = num[ok], den[ok]
    if num.size == 0 or den.mean() == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(n_boot, num.size))
    d = den[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num[idx].mean(axis=1) / d
    r = r[np.isfinite(r)]
    lo, hi = (np.percentile(r, 2.5), np.percentile(r, 97.5)) if r.size else (np.nan, np.nan)
    return float(num.mean() / den.mean()), float(lo), float(hi)


def _stats(prefix: str, x: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    m, lo, hi = bootstrap_mean(x, n_boot, seed)
    return {f"{prefix}_mean": m, f"{prefix}_ci_lo": lo, f"{prefix}_ci_hi": hi}


def _paired(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> np.ndarray:
    """Per-utterance ``a - b`` aligned on (condition, utt)."""
    j = a[["condition", "utt", metric]].merge(b[["condition", "utt", metric]], on=["condition", "utt"],
                                               suffixes=("_a", "_b"))
    return (j[f"{metric}_a"] - j[f"{metric}_b"]).to_numpy()


def leaderboard(per_utt: pd.DataFrame, cells: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Build leaderboard rows.

    Args:
        per_utt: per-utterance rows with columns ``cell_id, condition, utt`` and the metrics.
        cells: one row per cell: ``cell_id, system, static_id, upper_id`` (ids of the matching
            static baseline and clean-target oracle cells, may be empty) plus descriptive columns
            (teacher, loss, alpha, params, MACs, provenance ...) copied into the rows.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        One row per (cell, condition) plus a pooled ``all`` condition per cell.
    """
    out: list[dict[str, Any]] = []
    by_cell = {cid: df for cid, df in per_utt.groupby("cell_id", sort=False)}
    conditions = list(dict.fromkeys(per_utt["condition"]))
    for _, cell in cells.iterrows():
        df = by_cell.get(cell["cell_id"])
        if df is None:
            continue
        static = by_cell.get(cell.get("static_id") or "")
        oracle = by_cell.get(cell.get("upper_id") or "")
        for cond in [*conditions, "all"]:
            sub = df if cond == "all" else df[df["condition"] == cond]
            if sub.empty:
                continue
            row: dict[str, Any] = {k: cell[k] for k in cells.columns if k not in ("static_id", "upper_id")}
            row["condition"] = cond
            row["n"] = int(len(sub))
            if "skipped_frac" in sub:  # share of refinement updates the gate skipped (NaN: no refiner)
                row["skipped_frac"] = float(sub["skipped_frac"].mean())
            for m in METRICS:
                if m not in sub:
                    continue
                row.update(_stats(m, sub[m].to_numpy(), n_boot, seed))
                fail_col = f"{m}_failed"
                row[f"{m}_failures"] = int(sub[fail_col].sum()) if fail_col in sub else int(sub[m].isna().sum())
            st = None if static is None else (static if cond == "all" else static[static["condition"] == cond])
            if st is not None and not st.empty and cell["cell_id"] != cell.get("static_id"):
                for m in DELTA_METRICS:
                    row.update(_stats(f"d_{m}", _paired(sub, st, m), n_boot, seed))
            orc = None if oracle is None else (oracle if cond == "all" else oracle[oracle["condition"] == cond])
            if st is not None and not st.empty and orc is not None and not orc.empty:
                head = _paired(orc, st, "si_sdr")
                row.update(_stats("headroom_si_sdr", head, n_boot, seed))
                if cell["cell_id"] not in (cell.get("static_id"), cell.get("upper_id")):
                    gain = _paired(sub, st, "si_sdr")
                    # A fraction of a headroom whose CI includes 0 is a ratio of noise: NaN.
                    if gain.shape == head.shape and row["headroom_si_sdr_ci_lo"] > 0:
                        r, lo, hi = bootstrap_ratio(gain, head, n_boot, seed)
                        row.update({"recovered_frac": r, "recovered_ci_lo": lo, "recovered_ci_hi": hi})
            out.append(row)
    return pd.DataFrame(out)


SUMMARY_COLS = [
    ("system", "system"),
    ("loss", "loss"),
    ("alpha", "alpha"),
    ("seed", "seed"),
    ("si_sdr_mean", "SI-SDR"),
    ("si_sdri_mean", "SI-SDRi"),
    ("d_si_sdr_mean", "dSI-SDR vs static"),
    ("pesq_mean", "PESQ"),
    ("stoi_mean", "STOI"),
    ("headroom_si_sdr_mean", "headroom"),
    ("recovered_frac", "recovered"),
    ("total_macs_per_s", "MMAC/s"),
    ("student_params", "student params"),
]


def _fmt(col: str, v: Any, plain_int: bool = False) -> str:
    """One table cell: MAC counts in millions, parameter counts as integers, floats to 3 places."""
    finite = isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
    if col == "total_macs_per_s" and finite:
        return f"{v / 1e6:.1f}"
    if col in ("student_params", "distill_steps") and finite:
        return f"{int(v)}"
    if isinstance(v, float):
        if not np.isfinite(v):
            return ""
        return f"{v:.3f}" if plain_int or abs(v) < 10 else f"{v:.2f}"
    return "" if v is None else str(v)


# config axes shown (after "seed") only when they vary between the table's rows, so that cells
# differing in, say, the gate threshold never look like duplicates
AXIS_COLS = [
    ("teacher", "teacher"),
    ("tau", "tau"),
    ("student_inputs", "inputs"),
    ("distill_steps", "distill steps"),
    ("block_s", "block s"),
    ("context_s", "context s"),
    ("gate", "gate"),
    ("gate_threshold", "gate thr"),
    ("skipped_frac", "skipped"),  # not an axis, but only informative where gates differ
]


def _varies(values: pd.Series) -> bool:
    present = values.dropna()
    present = present[present.astype(str) != ""]
    return present.astype(str).nunique() > 1


def _rows(board: pd.DataFrame, condition: str, plain: bool) -> tuple[list[str], list[list[str]]]:
    sub = board[board["condition"] == condition]
    axes = [(c, h) for c, h in AXIS_COLS if c in sub and _varies(sub[c])]
    at = [c for c, _ in SUMMARY_COLS].index("seed") + 1
    cols = [(c, h) for c, h in [*SUMMARY_COLS[:at], *axes, *SUMMARY_COLS[at:]] if c in sub]
    body = [[_fmt(c, r[c], plain) for c, _ in cols] for _, r in sub.iterrows()]
    return [h for _, h in cols], body


def summary_table(board: pd.DataFrame, condition: str = "all") -> str:
    """Plain-text summary of the pooled leaderboard (what ``bench.run`` prints)."""
    header, body = _rows(board, condition, plain=False)
    widths = [max([len(h), *(len(b[i]) for b in body)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def markdown_table(board: pd.DataFrame, condition: str = "all") -> str:
    """The same summary as a Markdown table (for results/<run>/leaderboard.md)."""
    header, body = _rows(board, condition, plain=True)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(md)


def write_json(path: Path, obj: Any) -> None:
    from bench.cache import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))
