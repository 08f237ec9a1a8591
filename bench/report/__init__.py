"""Leaderboard rows, paired deltas, headroom and provenance.

A leaderboard row is one system (baseline, or teacher x loss x tau x alpha x seed) on one
condition (or ``all`` pooled), with the mean and 95 % bootstrap CI of each metric, the paired
delta against the static-embedding baseline, failure counts, complexity and provenance.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.metrics.dnsmos import COLUMNS as MOS_COLUMNS
from bench.metrics.spec import user_metric_columns
from bench.metrics.stats import (
    bootstrap_mean,
    bootstrap_ratio,
    cluster_bootstrap_mean,
    holm,
    paired_p,
)

# DNSMOS P.835 (+ P.808) and pDNSMOS (bench.metrics.dnsmos): columns only where eval.metrics asked for them
MOS_METRICS = MOS_COLUMNS
METRICS = ("si_sdr", "si_sdri", "pesq", "stoi", "estoi", *MOS_METRICS, "out_cos", "traj_cos",
           "late_si_sdr", "late_si_sdri", "late_pesq", "late_stoi", "late_traj_cos")
DELTA_METRICS = ("si_sdr", "pesq", "stoi", "estoi", *MOS_METRICS, "late_si_sdr", "traj_cos", "late_traj_cos")
SHRINK_METRICS = ("si_sdr", "late_si_sdr")
# the slow metrics eval.quality_n can restrict to a subset: their rows carry <metric>_n
SUBSET_METRICS = ("pesq", "stoi", "estoi", *MOS_METRICS)
PACKAGES = ("torch", "numpy", "pesq", "pystoi", "speechmos", "onnxruntime", "fvcore", "resemblyzer",
            "speechbrain", "nemo_toolkit", "transformers", "optuna")


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
    from bench.runtime import device_name

    return {"git_commit": git_commit(), "versions": versions(), "device": device_name(device), "date": now()}


def now() -> str:
    """The local date and time with its UTC offset, as result files record it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def versions() -> str:
    """Compact ``pkg=version`` list of the packages that shape the numbers."""
    out = [f"python={platform.python_version()}"]
    for p in PACKAGES:
        try:
            out.append(f"{p}={metadata.version(p)}")
        except metadata.PackageNotFoundError:
            continue
    return " ".join(out)



# cells.csv columns that point at another cell (not copied into leaderboard rows)
# teacher_static_id: for a cell of the student-space reading, the teacher space's static baseline
LINK_COLS = ("static_id", "upper_id", "control_id", "clean_id", "teacher_static_id")


def _stats(prefix: str, x: np.ndarray, n_boot: int, seed: int, clusters: np.ndarray | None = None) -> dict[str, float]:
    if clusters is None:
        m, lo, hi = bootstrap_mean(x, n_boot, seed)
    else:
        m, lo, hi = cluster_bootstrap_mean(x, clusters, n_boot, seed)
    return {f"{prefix}_mean": m, f"{prefix}_ci_lo": lo, f"{prefix}_ci_hi": hi}


def _paired(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance ``a - b`` aligned on (condition, utt), and the cluster (mixture) of each."""
    j = a[["condition", "utt", metric]].merge(b[["condition", "utt", metric]], on=["condition", "utt"],
                                               suffixes=("_a", "_b"))
    return (j[f"{metric}_a"] - j[f"{metric}_b"]).to_numpy(), _clusters(j)


def _clusters(df: pd.DataFrame) -> np.ndarray:
    """The test mixture each row belongs to: the short-utterance conditions share mixture ``utt``,
    the stream conditions share stream ``utt``; the pooled row resamples these whole."""
    from bench.config import STREAM_CONDITIONS

    fam = np.where(df["condition"].isin(STREAM_CONDITIONS).to_numpy(), "stream", "short")
    return np.char.add(np.char.add(fam.astype(str), ":"), df["utt"].astype(str).to_numpy())


def _sub(df: pd.DataFrame | None, cond: str) -> pd.DataFrame | None:
    if df is None:
        return None
    out = df if cond == "all" else df[df["condition"] == cond]
    return None if out.empty else out


def _delta_block(row: dict[str, Any], prefix: str, sub: pd.DataFrame, other: pd.DataFrame, metrics: tuple[str, ...],
                 n_boot: int, seed: int, pooled: bool) -> None:
    """Paired differences ``sub - other`` of ``metrics``: mean, CI and Wilcoxon p-value."""
    for m in metrics:
        if m not in sub or m not in other:
            continue
        d, cl = _paired(sub, other, m)
        if not np.isfinite(d).any():
            continue
        row.update(_stats(f"{prefix}_{m}", d, n_boot, seed, cl if pooled else None))
        # the pooled row repeats each mixture once per condition: no independent-sample test there
        row[f"p_{prefix}_{m}"] = float("nan") if pooled else paired_p(d)


def leaderboard(per_utt: pd.DataFrame, cells: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Build leaderboard rows.

    Args:
        per_utt: per-utterance rows with columns ``cell_id, condition, utt`` and the metrics.
        cells: one row per cell: ``cell_id`` and the ids of its matched cells (may be empty):
            ``static_id`` (the static baseline), ``control_id`` (``shrink`` with the same refine
            settings), ``upper_id`` (``oracle_target`` with the same settings: the ceiling),
            ``clean_id`` (``oracle_clean``); other columns (teacher, loss, alpha, params, MACs,
            provenance ...) are copied into the rows.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        One row per (cell, condition) plus a pooled ``all`` condition per cell: mean and 95 %
        bootstrap CI of every metric; ``d_<m>`` (vs static) and ``ds_<m>`` (vs shrink) paired
        differences with CI and Wilcoxon p-value, Holm-corrected across the grid's comparisons
        (and ``dt_<m>``, vs the teacher space's static, for cells of the student-space reading)
        (``p_d_<m>_holm``); ``headroom_si_sdr`` (ceiling - static) and ``recovered_frac``;
        ``headroom_clean_si_sdr`` (oracle_clean - static); the spread between training seeds.
        The pooled row resamples whole test mixtures across conditions.
    """
    out: list[dict[str, Any]] = []
    by_cell = {cid: df for cid, df in per_utt.groupby("cell_id", sort=False)}
    conditions = list(dict.fromkeys(per_utt["condition"]))
    for _, cell in cells.iterrows():
        df = by_cell.get(cell["cell_id"])
        if df is None:
            continue
        links = {k: by_cell.get(str(cell.get(k) or "")) for k in LINK_COLS}
        for cond in [*conditions, "all"]:
            sub = _sub(df, cond)
            if sub is None:
                continue
            out.append(_row(cell, cells.columns, cond, sub, {k: _sub(v, cond) for k, v in links.items()},
                            n_boot, seed))
    board = pd.DataFrame(out)
    _holm_columns(board)
    _seed_spread(board)
    return board


def _row(cell: pd.Series, columns: Any, cond: str, sub: pd.DataFrame, links: dict[str, pd.DataFrame | None],
         n_boot: int, seed: int) -> dict[str, Any]:
    pooled = cond == "all"
    clusters = _clusters(sub) if pooled else None
    row: dict[str, Any] = {k: cell[k] for k in columns if k not in LINK_COLS}
    row["condition"] = cond
    row["n"] = int(len(sub))
    if "skipped_frac" in sub:  # share of refinement updates the gate skipped (NaN: no refiner)
        row["skipped_frac"] = float(sub["skipped_frac"].mean())
    user = [c for c in user_metric_columns() if c in sub]  # the plugin metrics this run scored
    for m in (*METRICS, *user):
        if m not in sub or not sub[m].notna().any():
            continue
        row.update(_stats(m, sub[m].to_numpy(), n_boot, seed, clusters))
        fail_col = f"{m}_failed"
        row[f"{m}_failures"] = int(sub[fail_col].sum()) if fail_col in sub else int(sub[m].isna().sum())
        if m in SUBSET_METRICS or m in user or (m == "out_cos" and sub[m].isna().any()):
            # how many items it was scored on (eval.quality_n, eval.evidence_n: a subset)
            row[f"{m}_n"] = int(np.isfinite(sub[m].to_numpy(dtype=np.float64)).sum())
    cid = cell["cell_id"]
    st, ctl, up, clean = links["static_id"], links["control_id"], links["upper_id"], links["clean_id"]
    if st is not None and cid != cell.get("static_id"):
        _delta_block(row, "d", sub, st, (*DELTA_METRICS, *user), n_boot, seed, pooled)
    if ctl is not None and cid != cell.get("control_id"):
        _delta_block(row, "ds", sub, ctl, SHRINK_METRICS, n_boot, seed, pooled)
    if links.get("teacher_static_id") is not None:  # across the readings, on the same mixtures
        _delta_block(row, "dt", sub, links["teacher_static_id"], SHRINK_METRICS, n_boot, seed, pooled)
    if st is not None and clean is not None:
        head, cl = _paired(clean, st, "si_sdr")
        row.update(_stats("headroom_clean_si_sdr", head, n_boot, seed, cl if pooled else None))
    if st is not None and up is not None:
        head, cl = _paired(up, st, "si_sdr")
        row.update(_stats("headroom_si_sdr", head, n_boot, seed, cl if pooled else None))
        if cid not in (cell.get("static_id"), cell.get("upper_id")):
            gain, _ = _paired(sub, st, "si_sdr")
            # A fraction of a headroom whose CI includes 0 is a ratio of noise: NaN.
            r = lo = hi = float("nan")  # the column exists whatever the data (a stable schema)
            if gain.shape == head.shape and row["headroom_si_sdr_ci_lo"] > 0:
                r, lo, hi = bootstrap_ratio(gain, head, n_boot, seed)
            row.update({"recovered_frac": r, "recovered_ci_lo": lo, "recovered_ci_hi": hi})
    return row


def _holm_columns(board: pd.DataFrame) -> None:
    """``p_<x>_holm``: Holm correction of every ``p_<x>`` column across the grid's rows."""
    for col in [c for c in board.columns if c.startswith("p_") and not c.endswith("_holm")]:
        board[f"{col}_holm"] = holm(board[col].to_numpy(dtype=np.float64))


def _seed_spread(board: pd.DataFrame) -> None:
    """``d_si_sdr_seed_sd`` / ``n_seeds``: the standard deviation, between the training seeds of
    otherwise identical cells, of the mean paired SI-SDR gain (the training variance that the
    mixture CIs do not cover). NaN where a system has a single seed."""
    if board.empty or "d_si_sdr_mean" not in board or "seed" not in board:
        return
    ignore = {"cell_id", "seed", "config_hash", "date", "git_commit", "versions", "device", "n"}
    keys = [c for c in board.columns if c in ("system", "condition", "pse_key", "teacher", "loss", "tau", "alpha", "rule", "block_s",
                                              "context_s", "student_mode", "gate", "gate_threshold", "student_inputs",
                                              "distill_steps", "enh_emb_mix", "pse", "pse_tag", "level",
                                              "atten_lim_db") and c not in ignore]
    filled = board[keys].astype(str)
    grp = board.groupby([filled[k] for k in keys], sort=False)["d_si_sdr_mean"]
    board["d_si_sdr_seed_sd"] = grp.transform(lambda x: x.std(ddof=1) if x.notna().sum() > 1 else np.nan)
    board["n_seeds"] = grp.transform(lambda x: int(x.notna().sum()))


SUMMARY_COLS = [
    ("system", "system"),
    ("loss", "loss"),
    ("alpha", "alpha"),
    ("seed", "seed"),
    ("si_sdr_mean", "SI-SDR"),
    ("si_sdri_mean", "SI-SDRi"),
    ("d_si_sdr_mean", "dSI-SDR vs static"),
    ("p_d_si_sdr_holm", "p (Holm)"),
    ("ds_si_sdr_mean", "vs shrink"),
    ("late_si_sdri_mean", "late SI-SDRi"),
    ("pesq_mean", "PESQ"),
    ("stoi_mean", "STOI"),
    ("dnsmos_ovrl_mean", "DNSMOS OVRL"),
    ("pdnsmos_ovrl_mean", "pDNSMOS OVRL"),
    ("traj_cos_mean", "traj cos"),
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
    if col.startswith("p_") and finite:
        return f"{v:.2g}"
    if isinstance(v, float):
        if not np.isfinite(v):
            return ""
        return f"{v:.3f}" if plain_int or abs(v) < 10 else f"{v:.2f}"
    return "" if v is None else str(v)


# config axes shown (after "seed") only when they vary between the table's rows, so that cells
# differing in, say, the gate threshold never look like duplicates
AXIS_COLS = [
    ("pse_key", "backbone"),
    ("level", "level"),
    ("atten_lim_db", "atten. limit (dB)"),
    ("teacher", "teacher"),
    ("test_corpus", "test corpus"),
    ("rule", "rule"),
    ("n0", "n0"),
    ("tau", "tau"),
    ("student_inputs", "inputs"),
    ("distill_steps", "distill steps"),
    ("enh_emb_mix", "enh drift"),
    ("block_s", "block s"),
    ("context_s", "context s"),
    ("student_mode", "student mode"),
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
