"""``python -m bench.figures --run results/losses``: draw the figures of a finished run.

Every figure is a PNG, a PDF and a CSV in ``<run>/figures/`` (or ``--out``). The CSV holds
exactly the points the figure plots, with the key columns (``cell_id``, ``condition``, system,
role, rate, seed ...) of the row each comes from and a ``source`` column naming the run file
that row is in (``leaderboard``, ``per_utterance``, ``trajectory``, ``trials``, ``example``):
every plotted value is a value of that row under the same column name (points marked
``anchor`` are the static baseline's gain over itself, 0 by definition). Figures have no
title (captions live in :data:`bench.report.captions.CAPTIONS` and in the run's reports), one colour
per system in every figure, units on the axes, and 95 % CIs on every mean. A figure never
averages over an axis silently: it facets by condition, labels every cell by the settings that
distinguish it, and its caption says what it pools.

- ``gain_vs_rate``: paired SI-SDR gain over static vs refinement rate, one panel per condition.
- ``gain_vs_temperature``: the same gain vs the contrastive temperature (grids that vary it).
- ``headroom``: per condition, the gain of the references, ceiling, control and each system's
  best rate, with CIs.
- ``complexity``: pooled gain vs total MACs per second and vs parameters, with Pareto fronts.
- ``teachers``: grids with several teachers: each teacher's static SI-SDRi and its refiners' gain over
  that static, against the teacher's EER and MACs per second.
- ``conditions``: SI-SDRi heat map, cells x conditions.
- ``quality``: pooled PESQ-WB, STOI and DNSMOS / pDNSMOS OVRL of every cell, the mixture's as a line.
- ``speaker_verification``: student vs teacher EER and student-teacher agreement per loss.
- ``trajectory``: cosine of the embedding used for each block to the clean target's embedding.
- ``gain_distribution``: per-utterance paired SI-SDR gains over static, per condition.
- ``spectrogram``: mixture, static, refined and clean spectrograms of one test stream
  (``example/``, saved by ``bench.run``; see :mod:`bench.report.assets`).
- ``sweep_history`` / ``sweep_map``: a sweep's objective per trial with the best so far, and
  over the (rate, temperature) plane (``trials.csv`` of ``bench.sweep``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.report.assets import spectrogram_points

log = logging.getLogger("bench")


# leaderboard columns that identify a row in a figure's points file
KEYS = ("cell_id", "condition", "system", "role", "teacher", "loss", "tau", "alpha", "rule", "seed")
# settings that can tell cells of one system apart, with their short legend names
VARIANTS = {"alpha": "a", "teacher": "teacher", "tau": "tau", "rule": "", "n0": "n0", "gate": "gate",
            "gate_threshold": "thr", "context_s": "ctx", "block_s": "block", "student_inputs": "in",
            "distill_steps": "steps", "enh_emb_mix": "drift", "pse_key": "pse", "level": "level",
            "atten_lim_db": "lim", "seed": "s"}
CI = ("_mean", "_ci_lo", "_ci_hi")


class Skip(ValueError):
    """A figure whose axis the run lacks (no students, no refining cell, no streams, ...): it is not
    drawn, and :func:`draw_all` says so instead of failing."""


def _need(pts: pd.DataFrame, why: str) -> pd.DataFrame:
    """``pts``, or :class:`Skip` with ``why`` when there is nothing to plot."""
    if not len(pts):
        raise Skip(why)
    return pts


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, points: pd.DataFrame, source: str, tight: bool = True, dpi: int = 150) -> Path:
    """PNG and PDF of ``fig``, and ``points`` (what it plots) as CSV with its ``source``."""
    if tight:
        fig.tight_layout()
    # bbox "tight" keeps legends placed outside the axes
    fig.savefig(path.with_suffix(".png"), dpi=dpi, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    _plt().close(fig)
    points.assign(source=source).to_csv(path.with_suffix(".csv"), index=False)
    return path.with_suffix(".png")


def _role(board: pd.DataFrame, *roles: str) -> pd.DataFrame:
    """Rows whose refiner has one of ``roles`` (``system``, ``ceiling``, ``control``, ``reference``,
    ``baseline``), from the leaderboard's ``role`` column (see ``bench.refine``); a copy."""
    if "role" not in board:
        return board.iloc[0:0].copy()
    return board[board["role"].isin(roles)].copy()


def _fmt(v: Any) -> str:
    """A setting as legend text ("-" when unset)."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or (isinstance(v, str) and not v):
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def _seed(v: Any) -> str:
    """A student's training seed as text ("" for cells without one)."""
    try:
        return "" if v is None or v == "" or pd.isna(v) else str(int(float(v)))
    except (TypeError, ValueError):
        return str(v)


def cell_labels(board: pd.DataFrame, exclude: Iterable[str] = ()) -> pd.Series:
    """A label per row: the system name plus every setting (:data:`VARIANTS`, minus ``exclude``)
    that takes more than one value among the rows of that system, so cells never share a label
    silently; where even those do not tell two cells apart, the cell id's start is added."""
    exclude = set(exclude)

    def build(skip: set[str]) -> pd.Series:
        lab = board["system"].astype(str)
        for col, short in VARIANTS.items():
            if col in skip or col not in board:
                continue
            vals = (board[col].map(_seed) if col == "seed" else board[col].map(_fmt)).replace("", "-")
            varies = vals.groupby(board["system"]).transform("nunique") > 1
            tag = (" " + short + "=" if short else " ") + vals
            lab = lab.where(~varies, lab + tag)
        return lab

    full = build(set())
    tail = pd.Series("", index=board.index)
    if "cell_id" in board and len(board):
        dup = board.assign(_l=full).groupby(["_l", "condition"])["cell_id"].transform("nunique") > 1
        tail = tail.where(~dup, " #" + board["cell_id"].astype(str).str[:6])
    return build(exclude) + tail


def system_colours(systems: Iterable[str]) -> dict[str, tuple]:
    """One colour per system, stable across the figures of a run (sorted names, tab20)."""
    import seaborn as sns

    uniq = sorted({str(s) for s in systems})
    return dict(zip(uniq, sns.color_palette("tab20", max(len(uniq), 1)), strict=False))


def palette(labels: list[str]) -> dict[str, tuple]:
    """One colour per label (kept for callers of the old API)."""
    return system_colours(labels)


def _keys(df: pd.DataFrame) -> list[str]:
    return [c for c in KEYS if c in df]


def _conditions(board: pd.DataFrame) -> list[str]:
    return [c for c in dict.fromkeys(board["condition"]) if c != "all"]


def _errbar(ax: Any, x: Any, m: Any, lo: Any, hi: Any, horizontal: bool = False, **kw: Any) -> None:
    """Means ``m`` at positions ``x`` with CI bars ``[lo, hi]`` (an unknown bound: no bar); with
    ``horizontal`` the means run along the x axis and ``x`` are the rows."""
    m, lo, hi = (np.asarray(v, dtype=float) for v in (m, lo, hi))
    err = np.vstack([np.clip(m - lo, 0, None), np.clip(hi - m, 0, None)])
    err = np.where(np.isfinite(err), err, 0.0)
    kw.setdefault("capsize", 3)
    if horizontal:
        ax.errorbar(m, x, xerr=err, **kw)
    else:
        ax.errorbar(x, m, yerr=err, **kw)


def _legend_below(fig: Any, ax: Any, fontsize: int = 7) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=fontsize, loc="upper center", ncol=min(3, len(labels)),
                   bbox_to_anchor=(0.5, 0.0))


def _panels(n: int, width: float = 3.4, height: float = 3.4) -> tuple[Any, Any]:
    fig, axes = _plt().subplots(1, max(1, n), figsize=(width * max(1, n), height), sharey=True, squeeze=False)
    return fig, axes[0]


def _static_row(board: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    """The static baseline row ``row`` is compared with, on the same condition: its ``static_id``
    (from cells.csv) when known, else the baseline of the same teacher."""
    same = board[(board["condition"] == row["condition"]) & (board.get("role") == "baseline")]
    sid = row.get("static_id")
    if isinstance(sid, str) and sid:
        hit = board[(board["cell_id"] == sid) & (board["condition"] == row["condition"])]
        if len(hit):
            return hit.iloc[0]
    if "teacher" in board and len(same[same["teacher"] == row.get("teacher")]):
        same = same[same["teacher"] == row.get("teacher")]
    return same.iloc[0] if len(same) else None


def _with_anchors(sub: pd.DataFrame, board: pd.DataFrame, line: str, cols: list[str]) -> pd.DataFrame:
    """Points of ``sub`` plus, per line and condition, the static row with a gain of 0."""
    pts = sub[[*_keys(sub), line, *cols]].assign(anchor=False)
    anchors = []
    for (name, _), g in sub.groupby([line, "condition"], sort=False):
        st = _static_row(board, g.iloc[0])
        if st is not None:
            anchors.append({**{k: st[k] for k in _keys(sub)}, line: name, **dict.fromkeys(cols, 0.0),
                            "anchor": True})
    return pd.concat([pd.DataFrame(anchors), pts], ignore_index=True) if anchors else pts


# --------------------------------------------------------------------------- leaderboard figures
def gain_vs_rate_points(board: pd.DataFrame) -> pd.DataFrame:
    sub = _role(board[board["condition"] != "all"], "system", "control", "ceiling")
    sub = sub[sub["alpha"].fillna(0) > 0]
    sub["line"] = cell_labels(board, exclude=("alpha",)).loc[sub.index]
    return _with_anchors(sub, board, "line", ["d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi"])


def _line_plot(pts: pd.DataFrame, x: str, colours: dict[str, tuple], xlabel: str, log_x: bool = False) -> Any:
    """One panel per condition, one errorbar line per ``line`` of ``pts`` (gain over static)."""
    conds = [c for c in dict.fromkeys(pts["condition"])] or [""]
    fig, axes = _panels(len(conds))
    styles = {"ceiling": "--", "control": ":"}
    markers = "osD^vPX*"
    for ax, cond in zip(axes, conds, strict=False):
        g = pts[pts["condition"] == cond]
        for k, (name, h) in enumerate(g.groupby("line", sort=True)):
            own = h[~h["anchor"].astype(bool)] if "anchor" in h else h
            system, role = str(own["system"].iloc[0]), str(own["role"].iloc[0])
            h = h.sort_values(x)
            _errbar(ax, h[x], h["d_si_sdr_mean"], h["d_si_sdr_ci_lo"], h["d_si_sdr_ci_hi"],
                    color=colours.get(system), linestyle=styles.get(role, "-"), marker=markers[k % len(markers)],
                    ms=3, label=name)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel(xlabel)
        if log_x:
            ax.set_xscale("log")
        ax.set_title(cond, fontsize=9)  # panel label (the condition), not a figure title
    axes[0].set_ylabel("SI-SDR gain over static (dB)")
    _legend_below(fig, axes[0])
    return fig


def gain_vs_rate(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    pts = gain_vs_rate_points(board)
    _need(pts[~pts["anchor"].astype(bool)], "no refining cell (rate above 0)")
    fig = _line_plot(pts, "alpha", colours or system_colours(board["system"]), "refinement rate alpha")
    return _save(fig, path, pts, "leaderboard")


def tau_varies(board: pd.DataFrame) -> bool:
    """Whether some refiner was run at more than one distillation temperature."""
    pts = gain_vs_temperature_points(board)
    return bool(len(pts)) and bool((pts.groupby(["line", "condition"])["tau"].nunique() > 1).any())


def gain_vs_temperature_points(board: pd.DataFrame) -> pd.DataFrame:
    sub = _role(board[board["condition"] != "all"], "system")
    if "tau" not in sub:
        return sub.iloc[0:0].assign(line=[])
    sub = sub[(sub["alpha"].fillna(0) > 0) & np.isfinite(pd.to_numeric(sub["tau"], errors="coerce"))]
    sub["line"] = cell_labels(board, exclude=("tau",)).loc[sub.index]
    return sub[[*_keys(sub), "line", "d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi"]]


def gain_vs_temperature(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    if not tau_varies(board):
        raise Skip("no refiner was run at more than one distillation temperature")
    pts = gain_vs_temperature_points(board)
    fig = _line_plot(pts, "tau", colours or system_colours(board["system"]), "distillation temperature tau (log)",
                     log_x=True)
    return _save(fig, path, pts, "leaderboard")


def headroom_points(board: pd.DataFrame) -> pd.DataFrame:
    per = board[board["condition"] != "all"]
    cols = ["d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi"]
    fixed = _role(per, "reference", "ceiling", "control").dropna(subset=["d_si_sdr_mean"])
    fixed["bar"] = cell_labels(board).loc[fixed.index]
    fixed["pick"] = ""
    sysr = _role(per, "system").dropna(subset=["d_si_sdr_mean"])
    sysr = sysr[sysr["alpha"].fillna(0) > 0]
    sysr["bar"] = cell_labels(board, exclude=("alpha",)).loc[sysr.index] + ", best rate"
    best = sysr.loc[sysr.groupby(["bar", "condition"])["d_si_sdr_mean"].idxmax()] if len(sysr) else sysr
    best = best.assign(pick="largest mean gain on this condition")
    out = pd.concat([fixed, best], ignore_index=True)
    return out[[*_keys(out), "bar", "pick", *cols]] if len(out) else out.assign(bar=[], pick=[])


def headroom(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    pts = _need(headroom_points(board), "no reference, ceiling, control or refining cell has a gain over static")
    colours = colours or system_colours(board["system"])
    conds = _conditions(board)
    bars = sorted(pts["bar"].unique()) if len(pts) else []
    fig, ax = _plt().subplots(figsize=(max(6, 1.6 * len(conds)), 4))
    w = 0.85 / max(1, len(bars))
    hatches = ["", "//", "..", "xx", "\\\\", "oo", "--"]
    seen: dict[str, int] = {}
    for i, bar in enumerate(bars):
        g = pts[pts["bar"] == bar].set_index("condition").reindex(conds).dropna(subset=["d_si_sdr_mean"])
        system = str(g["system"].iloc[0])
        seen[system] = seen.get(system, -1) + 1
        xs = [conds.index(c) - 0.425 + w * (i + 0.5) for c in g.index]
        ax.bar(xs, g["d_si_sdr_mean"], width=w, color=colours.get(system), label=bar,
               hatch=hatches[seen[system] % len(hatches)], edgecolor="white", linewidth=0.3)
        _errbar(ax, xs, g["d_si_sdr_mean"], g["d_si_sdr_ci_lo"], g["d_si_sdr_ci_hi"], fmt="none", ecolor="black",
                elinewidth=0.8)
        for x, (_, r) in zip(xs, g.iterrows(), strict=True):
            if r["pick"]:
                ax.annotate(f"a={r['alpha']:g}", (x, max(r["d_si_sdr_ci_hi"], r["d_si_sdr_mean"])), fontsize=5,
                            ha="center", va="bottom", rotation=90)
    ax.set_xticks(range(len(conds)), conds, rotation=20)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_ylabel("SI-SDR gain over static (dB)")
    if bars:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path, pts, "leaderboard")


def _pareto(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (lower x and higher y), sorted by x."""
    order = np.argsort(x, kind="stable")
    best, keep = -np.inf, []
    for i in order:
        if y[i] > best:
            keep.append(i)
            best = y[i]
    return np.array(keep, dtype=int)


def complexity_points(board: pd.DataFrame) -> pd.DataFrame:
    """Deployable cells pooled over conditions; static (gain 0 by definition) is an anchor."""
    sub = board[board["condition"] == "all"].dropna(subset=["total_macs_per_s"])
    sub = sub[sub["role"].isin(["system", "baseline", "backbone"])] if "role" in sub else sub
    cols = ["d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi"]
    anchor = sub["d_si_sdr_mean"].isna()  # the baseline: no gain against itself
    if "role" in sub:
        anchor = anchor & (sub["role"] == "baseline")
    pts = sub[[*_keys(sub), *cols, "total_macs_per_s"]].assign(anchor=anchor.to_numpy())
    pts.loc[pts["anchor"], cols] = 0.0
    pts = pts.dropna(subset=["d_si_sdr_mean"])
    pts["label"] = cell_labels(board).loc[pts.index]
    num = {c: pd.to_numeric(board.loc[pts.index, c], errors="coerce").fillna(0.0) if c in board
           else pd.Series(0.0, index=pts.index) for c in ("pse_params", "student_params", "teacher_params",
                                                            "extra_macs_per_s")}
    for c in ("pse_params", "student_params", "teacher_params"):
        pts[c] = board.loc[pts.index, c] if c in board else np.nan
    teacher_run = (num["extra_macs_per_s"] > 0) & (num["student_params"] == 0)
    # derived: what runs per block (the enrollment's one-off teacher embedding is not counted)
    pts["params_per_block"] = num["pse_params"] + num["student_params"] + num["teacher_params"].where(teacher_run, 0)
    for x in ("total_macs_per_s", "params_per_block"):
        ok = pts[x].to_numpy(float) > 0
        front = np.zeros(len(pts), dtype=bool)
        idx = np.flatnonzero(ok)[_pareto(pts[x].to_numpy(float)[ok], pts["d_si_sdr_mean"].to_numpy(float)[ok])] \
            if ok.any() else []
        front[idx] = True
        pts[f"pareto_{x}"] = front
    return pts


def complexity(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    pts = _need(complexity_points(board), "no deployable cell has both a gain over static and a MAC count")
    colours = colours or system_colours(board["system"])
    fig, axes = _panels(2, 4.2, 3.8)
    for ax, x, scale, xlabel in ((axes[0], "total_macs_per_s", 1e6, "total MMAC per second of audio (log)"),
                                 (axes[1], "params_per_block", 1e3, "parameters run per block (thousands, log)")):
        g = pts[pts[x] > 0]
        for label, h in g.groupby("label"):
            _errbar(ax, h[x] / scale, h["d_si_sdr_mean"], h["d_si_sdr_ci_lo"], h["d_si_sdr_ci_hi"], fmt="o", ms=4,
                    color=colours.get(str(h["system"].iloc[0])), label=label)
        front = g[g[f"pareto_{x}"]].sort_values(x)
        if len(front):
            ax.step(front[x] / scale, front["d_si_sdr_mean"], where="post", color="black", lw=0.8,
                    label="Pareto front")
        ax.set_xscale("log")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("pooled SI-SDR gain over static (dB)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[1].legend(handles, labels, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path, pts, "leaderboard")


# x axes of ``teachers``: column, factor to the plotted unit, label, log scale
TEACHER_X = (("teacher_eer", 100.0, "teacher EER on 1 s crops (%)", False),
             ("teacher_macs_per_s", 1e-6, "teacher MMAC per second of audio (log)", True))


def teachers_points(board: pd.DataFrame) -> pd.DataFrame:
    """Pooled rows (``condition == all``) of a grid with more than one teacher: each teacher's static
    (``what=static``: its SI-SDRi over the mixture) and every cell that refines at a rate above 0
    (``what=gain``: its paired gain over its own teacher's static), with the teacher's EER and MACs."""
    cols = ["teacher_eer", "teacher_macs_per_s", "si_sdri_mean", "si_sdri_ci_lo", "si_sdri_ci_hi",
            "d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi"]
    if "teacher" not in board or board["teacher"].nunique() < 2 or not {"teacher_eer", "si_sdri_mean"} <= set(board):
        return pd.DataFrame(columns=[*KEYS, "what", *cols])
    sub = board[board["condition"] == "all"].copy()
    for c in cols:
        sub[c] = pd.to_numeric(sub[c], errors="coerce") if c in sub else np.nan
    static = sub[sub["role"] == "baseline"].assign(what="static")
    gain = sub[(sub["role"] != "baseline") & (sub["alpha"].fillna(0) > 0)].dropna(subset=["d_si_sdr_mean"])
    pts = pd.concat([static, gain.assign(what="gain")], ignore_index=False)
    pts = pts[[*_keys(pts), "what", *cols]].dropna(subset=["teacher_eer"])
    return pts.assign(label=cell_labels(board, exclude=("teacher", "pse_key")).loc[pts.index]).reset_index(drop=True)


def teachers(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    """Top: each teacher's static SI-SDRi; bottom: each refiner's gain over its own teacher's static;
    against the teacher's EER (left) and MACs per second (right). Each point is labelled by teacher."""
    pts = teachers_points(board)
    if not len(pts[pts["what"] == "static"]):
        raise Skip("the grid has fewer than two teachers with a static cell and an EER")
    colours = colours or system_colours(board["system"])
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(9.0, 6.6), squeeze=False, sharey="row")
    labels = sorted(dict.fromkeys(pts.loc[pts["what"] == "gain", "label"]))
    for j, (x, factor, xlabel, log_x) in enumerate(TEACHER_X):
        for i, (what, y) in enumerate((("static", "si_sdri"), ("gain", "d_si_sdr"))):
            ax = axes[i][j]
            g = pts[(pts["what"] == what) & np.isfinite(pts[x])]
            if log_x:
                g = g[g[x] > 0]
            span = float(np.ptp(g[x] * factor)) if len(g) else 0.0
            for k, (label, h) in enumerate(g.groupby("label", sort=True)):
                # a small sideways offset per line keeps the points of one teacher apart
                off = (k - (len(labels) - 1) / 2) if what == "gain" else 0.0
                xs = h[x] * factor * (10 ** (0.02 * off) if log_x else 1.0) + (0.0 if log_x else 0.02 * (span or 1.0) * off)
                _errbar(ax, xs, h[f"{y}_mean"], h[f"{y}_ci_lo"], h[f"{y}_ci_hi"], fmt="o", ms=4,
                        color=colours.get(str(h["system"].iloc[0])), label=label)
                if what == "static":
                    for xv, yv, t in zip(xs, h[f"{y}_mean"], h["teacher"], strict=False):
                        ax.annotate(str(t), (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7)
            if log_x:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(plt.NullFormatter())
            if what == "gain":
                ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_xlabel(xlabel)
            if not len(g):
                ax.text(0.5, 0.5, "not counted", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    axes[0][0].set_ylabel("static SI-SDRi (dB)")
    axes[1][0].set_ylabel("gain over own static (dB)")
    handles, names = axes[1][0].get_legend_handles_labels()
    if handles:
        axes[1][1].legend(handles, names, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path, pts, "leaderboard")


def conditions_points(board: pd.DataFrame) -> pd.DataFrame:
    sub = board[board["condition"] != "all"].dropna(subset=["si_sdri_mean"])
    cols = [c + s for c in ("si_sdri",) for s in CI if c + s in board]
    return sub[_keys(sub) + cols].assign(label=cell_labels(board).loc[sub.index])


def conditions(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    import seaborn as sns

    pts = _need(conditions_points(board), "no cell has an SI-SDRi on a condition")
    pivot = pts.pivot_table(index="label", columns="condition", values="si_sdri_mean", aggfunc="first")
    pivot = pivot.reindex(columns=[c for c in _conditions(board) if c in pivot.columns])
    fig, ax = _plt().subplots(figsize=(1.3 * pivot.shape[1] + 3, 0.32 * pivot.shape[0] + 1.5))
    if pivot.size:
        sns.heatmap(pivot, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": "SI-SDRi (dB)"})
    ax.set_ylabel("")
    return _save(fig, path, pts, "leaderboard")


# speech-quality metrics the ``quality`` figure shows (leaderboard column stem, axis label)
QUALITY_METRICS = (("pesq", "PESQ-WB"), ("stoi", "STOI"), ("dnsmos_ovrl", "DNSMOS OVRL (P.835)"),
                   ("pdnsmos_ovrl", "pDNSMOS OVRL"))


def _finite(board: pd.DataFrame, col: str) -> pd.Series:
    return pd.Series(np.isfinite(pd.to_numeric(board[col], errors="coerce")), index=board.index) if col in board \
        else pd.Series(False, index=board.index)


def quality_points(board: pd.DataFrame) -> pd.DataFrame:
    """The pooled row (``condition == all``) of every cell with a speech-quality mean
    (:data:`QUALITY_METRICS`), the mixture's included, with those means and CIs."""
    stems = [m for m, _ in QUALITY_METRICS if _finite(board, f"{m}_mean").any()]
    cols = [m + s for m in stems for s in CI if m + s in board]
    pooled = board[board["condition"] == "all"]
    if not stems or not len(pooled):
        return pd.DataFrame(columns=[*KEYS, *cols, "label"])
    keep = np.logical_or.reduce([_finite(pooled, f"{m}_mean").to_numpy() for m in stems])
    sub = pooled[keep]
    return sub[[*_keys(sub), *cols]].assign(label=cell_labels(board).loc[sub.index])


def quality(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    """One panel per speech-quality metric the run scored: each cell's pooled mean with its 95 % CI
    (rows), the mixture's as a dashed line."""
    pts = quality_points(board)
    cells = pts[pts["system"] != "mixture"]
    if not len(cells):
        raise Skip("no cell has a PESQ, STOI or DNSMOS mean (eval.metrics)")
    colours = colours or system_colours(board["system"])
    stems = [(m, name) for m, name in QUALITY_METRICS if f"{m}_mean" in pts]  # the scored ones
    labels = list(dict.fromkeys(cells["label"]))
    y = {label: i for i, label in enumerate(labels)}
    fig, axes = _plt().subplots(1, len(stems), figsize=(3.0 * len(stems) + 2.0, 0.26 * len(labels) + 1.4),
                                sharey=True, squeeze=False)
    mix = pts[pts["system"] == "mixture"]
    for ax, (m, name) in zip(axes[0], stems, strict=True):
        g = cells[_finite(cells, f"{m}_mean")]
        for system, h in g.groupby("system", sort=False):
            _errbar(ax, [y[label] for label in h["label"]], *(h[f"{m}{s}"] for s in CI), horizontal=True,
                    fmt="o", ms=4, capsize=2, color=colours.get(str(system)))
        if len(mix) and np.isfinite(float(mix[f"{m}_mean"].iloc[0])):
            ax.axvline(float(mix[f"{m}_mean"].iloc[0]), color="black", ls="--", lw=1, label="mixture")
        ax.set_xlabel(name)
        ax.grid(axis="x", lw=0.3)
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0][0].invert_yaxis()
    handles, names = axes[0][-1].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, names, fontsize=7, loc="lower right")
    return _save(fig, path, pts, "leaderboard")


SPK_COLS = ("teacher_eer", "student_eer", "student_agreement")
STUDENT_ID = ("teacher", "loss", "tau", "centre", "coord_weight", "align", "seed", "student_inputs", "distill_steps",
              "enh_emb_mix", "student_params", "pse_key")


def speaker_points(board: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct student (``what=student``) and per teacher (``what=teacher``)."""
    if not set(SPK_COLS) <= set(board.columns):
        return pd.DataFrame(columns=[*KEYS, "what", *SPK_COLS])
    sub = board[(board["condition"] == "all") & np.isfinite(pd.to_numeric(board["student_eer"], errors="coerce"))]
    ident = [c for c in STUDENT_ID if c in sub]
    ids = sub[ident].map(_fmt).agg("|".join, axis=1) if len(sub) and ident else pd.Series("", index=sub.index)
    stu = sub.assign(_id=ids).drop_duplicates("_id")
    stu = stu[[*_keys(stu), *SPK_COLS]].assign(what="student")
    rows = board[(board["condition"] == "all") & np.isfinite(pd.to_numeric(board["teacher_eer"], errors="coerce"))]
    tea = rows.drop_duplicates("teacher") if "teacher" in rows else rows.iloc[:1]
    tea = tea[[*_keys(tea), "teacher_eer"]].assign(what="teacher")
    return pd.concat([stu, tea], ignore_index=True)


QUALITY_COLS = ("student_eer", "student_agreement", "student_mean_cos")


def student_quality_points(board: pd.DataFrame) -> pd.DataFrame:
    """Pooled rows (``condition == all``) of the cells that refine with a student, with the
    columns :func:`student_quality` plots."""
    cols = ["d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi", *QUALITY_COLS, "teacher_mean_cos"]
    if not set(cols) <= set(board.columns):
        return pd.DataFrame(columns=[*KEYS, *cols])
    sub = board[(board["condition"] == "all") & (board["alpha"].fillna(0) > 0)
                & np.isfinite(pd.to_numeric(board["student_eer"], errors="coerce"))]
    return sub[[*_keys(sub), *cols]]


def student_quality(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    pts = student_quality_points(board)
    if not len(pts):
        raise Skip("the grid has no refining students")
    colours = colours or system_colours(board["system"])
    fig, axes = _plt().subplots(1, 3, figsize=(10.2, 3.4), squeeze=False, sharey=True)
    labels = (("student_eer", 100.0, "student EER (%)"), ("student_agreement", 1.0, "agreement with teacher"),
              ("student_mean_cos", 1.0, "cosine to the teacher's mean direction"))
    y, lo, hi = (pts[c].to_numpy(float) for c in ("d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi"))
    for ax, (col, scale, xlabel) in zip(axes[0], labels, strict=True):
        x = pts[col].to_numpy(float) * scale
        for system in sorted(pts["system"].unique()):
            m = (pts["system"] == system).to_numpy()
            _errbar(ax, x[m], y[m], lo[m], hi[m], color=colours.get(system), fmt="o", ms=4,
                    label=system)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel(xlabel)
    teacher = pd.to_numeric(pts["teacher_mean_cos"], errors="coerce").dropna()
    if len(teacher):
        axes[0][2].axvline(float(teacher.iloc[0]), color="black", ls="--", lw=1, label="teacher")
    axes[0][0].set_ylabel("SI-SDR gain over static (dB)")
    _legend_below(fig, axes[0][1])
    return _save(fig, path, pts, "leaderboard")


ROLE_MARKERS = {"baseline": "s", "system": "o", "control": "v", "ceiling": "^"}


def readings_points(board: pd.DataFrame) -> pd.DataFrame:
    """Every baseline, refiner, control and ceiling row of both readings with its paired SI-SDR
    gain over the **teacher space's** static (``d_si_sdr`` for teacher-space rows, ``dt_si_sdr``
    for student-space rows; the teacher space's static is 0), its ``space`` and its ``base``
    system name (without ``@<space>``)."""
    cols = ["space", "base", "gain", "gain_lo", "gain_hi"]
    if "dt_si_sdr_mean" not in board or not np.isfinite(pd.to_numeric(board["dt_si_sdr_mean"],
                                                                       errors="coerce")).any():
        return pd.DataFrame(columns=[*KEYS, *cols])
    sub = board[board["role"].isin(list(ROLE_MARKERS))].copy()
    student = sub["system"].str.contains("@", regex=False)
    sub["space"] = np.where(student, sub["system"].str.split("@").str[-1], "teacher space")
    sub["base"] = sub["system"].str.split("@").str[0]
    for suffix, part in (("", "mean"), ("_lo", "ci_lo"), ("_hi", "ci_hi")):
        t = pd.to_numeric(sub.get(f"d_si_sdr_{part}"), errors="coerce")
        sub["gain" + suffix] = np.where(student, pd.to_numeric(sub[f"dt_si_sdr_{part}"], errors="coerce"),
                                        np.where(sub["role"] == "baseline", 0.0, t))
    sub = sub[np.isfinite(sub["gain"].to_numpy(float))]
    return sub[[*_keys(sub), *cols]]


def readings(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    pts = _need(readings_points(board), "the grid has no cell of the student-space reading")
    conds = [c for c in _conditions(board) if c in set(pts["condition"])]
    spaces = list(dict.fromkeys(["teacher space", *sorted(set(pts["space"]) - {"teacher space"})]))
    bases = sorted(pts["base"].unique())
    colours = system_colours(bases)  # by system without its space; one colour each, however many
    fig, axes = _panels(len(conds), width=2.9)
    offsets = {b: (k - (len(bases) - 1) / 2) * 0.6 / max(1, len(bases)) for k, b in enumerate(bases)}
    for ax, cond in zip(axes, conds, strict=False):
        c = pts[pts["condition"] == cond]
        for b in bases:
            for role, marker in ROLE_MARKERS.items():
                m = c[(c["base"] == b) & (c["role"] == role)]
                if not len(m):
                    continue
                x = np.array([spaces.index(s) for s in m["space"]], float) + offsets[b]
                _errbar(ax, x, m["gain"].to_numpy(float), m["gain_lo"].to_numpy(float), m["gain_hi"].to_numpy(float),
                        color=colours[b], fmt=marker, ms=4, label=f"{b} ({role})")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(spaces)), [s.replace("student-space-", "student space:\n") for s in spaces],
                      fontsize=6)
        ax.set_title(cond, fontsize=9)
    axes[0].set_ylabel("SI-SDR vs the teacher space's static (dB)")
    uniq: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            uniq.setdefault(lab, h)
    fig.legend(list(uniq.values()), list(uniq.keys()), loc="lower center", ncol=4, fontsize=6,
               bbox_to_anchor=(0.5, -0.16))
    return _save(fig, path, pts, "leaderboard")


def has_speaker_metrics(board: pd.DataFrame) -> bool:
    return bool((speaker_points(board)["what"] == "student").any())


def speaker_verification(board: pd.DataFrame, path: Path, colours: dict[str, tuple] | None = None) -> Path:
    pts = speaker_points(board)
    if not (pts["what"] == "student").any():
        raise Skip("the grid has no students (no student EER)")
    colours = colours or system_colours(board["system"])
    stu, tea = pts[pts["what"] == "student"], pts[pts["what"] == "teacher"]
    many = stu["teacher"].nunique() > 1 if "teacher" in stu else False
    cat = stu["loss"].astype(str) + (("\n" + stu["teacher"].astype(str)) if many else "")
    cats = sorted(cat.unique())
    fig, axes = _plt().subplots(1, 2, figsize=(2.0 * max(2, len(cats)) + 2, 3.4), squeeze=False)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.15, 0.15, len(stu))
    x = np.array([cats.index(c) for c in cat], dtype=float) + jitter
    for ax, col, scale, ylabel in ((axes[0][0], "student_eer", 100.0, "EER (%)"),
                                   (axes[0][1], "student_agreement", 1.0, "agreement with teacher (cosine)")):
        for system in sorted(stu["system"].unique()):
            m = (stu["system"] == system).to_numpy()
            ax.scatter(x[m], stu[col].to_numpy(float)[m] * scale, color=colours.get(system), s=18, label=system)
        ax.set_xticks(range(len(cats)), cats, fontsize=7)
        ax.set_xlabel("distillation loss" + (" / teacher" if many else ""))
        ax.set_ylabel(ylabel)
    for k, c in enumerate(cats):
        teacher = c.split("\n")[1] if many else (str(tea["teacher"].iloc[0]) if len(tea) else "")
        t = tea[tea["teacher"].astype(str) == teacher] if "teacher" in tea else tea
        if len(t):
            axes[0][0].hlines(float(t["teacher_eer"].iloc[0]) * 100, k - 0.3, k + 0.3, color="black", lw=1.5,
                              label="teacher" if k == 0 else None)
    axes[0][0].legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2)
    return _save(fig, path, pts, "leaderboard")


# --------------------------------------------------------------------------- other run files
def trajectory_points(traj: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    pts = traj.copy()
    pooled = board[board["condition"] == "all"]
    if "cell_id" in pts and "cell_id" in pooled:
        names = dict(zip(pooled["cell_id"], cell_labels(board).loc[pooled.index], strict=True))
        pts["label"] = pts["cell_id"].map(names).fillna(pts["system"].astype(str))
    else:
        pts["label"] = pts["system"].astype(str)
    keep = [c for c in (*KEYS, "block", "t_s", "cos_to_target", "label") if c in pts]
    return pts[keep]


def trajectory(traj: pd.DataFrame, path: Path, board: pd.DataFrame | None = None,
               colours: dict[str, tuple] | None = None) -> Path:
    board = board if board is not None else traj.assign(condition="all")
    pts = _need(trajectory_points(traj, board), "no streamed cell (trajectory.csv is empty)")
    colours = colours or system_colours(board["system"])
    conds = list(dict.fromkeys(pts["condition"]))
    fig, axes = _panels(len(conds), 3.4, 3.2)
    for ax, cond in zip(axes, conds, strict=False):
        g = pts[pts["condition"] == cond]
        seen: dict[str, int] = {}
        for label, h in g.groupby("label", sort=True):
            system = str(h["system"].iloc[0])
            seen[system] = seen.get(system, -1) + 1  # cells of one system: one colour, other dashes
            ax.plot(h["t_s"], h["cos_to_target"], color=colours.get(system), lw=1, label=label,
                    linestyle=("-", "--", ":", "-.")[seen[system] % 4])
        ax.set_xlabel("time in stream (s)")
        ax.set_title(cond, fontsize=9)
    axes[0].set_ylabel("cosine to clean-target embedding")
    _legend_below(fig, axes[0], 6)
    return _save(fig, path, pts, "trajectory")


def gain_distribution_points(per: pd.DataFrame, cells: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    cells = cells.copy()
    if "static_id" not in cells:
        cells["static_id"] = ""
    ref = per[["cell_id", "condition", "utt", "si_sdr"]].merge(cells[["cell_id", "static_id"]], on="cell_id")
    base = per[["cell_id", "condition", "utt", "si_sdr"]].rename(columns={"cell_id": "static_id",
                                                                          "si_sdr": "static_si_sdr"})
    j = ref.merge(base, on=["static_id", "condition", "utt"])
    j = j[j["cell_id"] != j["static_id"]]
    pooled = board[board["condition"] == "all"]
    keep = [c for c in ("cell_id", "system", "role", "alpha", "seed") if c in pooled]
    lab = pooled[keep].assign(label=cell_labels(board).loc[pooled.index])
    j = j.merge(lab, on="cell_id")
    j = j[j["role"].isin(["system", "control", "ceiling"]) & (j["alpha"].fillna(0) > 0)]
    return j.assign(gain=j["si_sdr"] - j["static_si_sdr"]).reset_index(drop=True)


def gain_distribution(per: pd.DataFrame, cells: pd.DataFrame, path: Path, board: pd.DataFrame | None = None,
                      colours: dict[str, tuple] | None = None) -> Path:
    import seaborn as sns

    if board is None:
        board = cells.assign(condition="all")
    pts = _need(gain_distribution_points(per, cells, board), "no refining cell paired with a static one")
    colours = colours or system_colours(board["system"])
    conds = list(dict.fromkeys(pts["condition"])) or [""]
    order = sorted(pts["label"].unique())
    fig, axes = _panels(len(conds), 3.0, 0.3 * max(4, len(order)) + 1)
    pal = {lab: colours.get(str(s)) for lab, s in zip(pts["label"], pts["system"], strict=True)}
    for ax, cond in zip(axes, conds, strict=False):
        g = pts[pts["condition"] == cond]
        if len(g):
            sns.boxplot(data=g, y="label", x="gain", order=order, hue="label", palette=pal, legend=False, ax=ax,
                        fliersize=0, boxprops={"alpha": 0.5})
            sns.stripplot(data=g, y="label", x="gain", order=order, ax=ax, size=1.5, alpha=0.6, color="black")
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("per-utterance SI-SDR gain over static (dB)", fontsize=8)
        ax.set_ylabel("")
        ax.set_title(cond, fontsize=9)
    return _save(fig, path, pts, "per_utterance")


def _stft_db(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy.signal import stft

    f, t, z = stft(x, fs=sr, nperseg=512, noverlap=384)
    return f, t, 20 * np.log10(np.abs(z) + 1e-9)


def spectrogram(run_dir: Path, path: Path) -> Path:
    from bench import audio

    pts = spectrogram_points(run_dir)
    specs = [_stft_db(audio.load(run_dir / f), audio.SR) for f in pts["file"]]
    top = max(float(s.max()) for _, _, s in specs)
    cmap = _plt().get_cmap("magma", 32)
    change = json.loads((run_dir / "example" / "example.json").read_text()).get("late_start_s")
    fig, axes = _plt().subplots(len(pts), 1, figsize=(6.5, 1.4 * len(pts) + 0.6), sharex=True, squeeze=False,
                                layout="constrained")
    for ax, (_, r), (f, t, s) in zip(axes[:, 0], pts.iterrows(), specs, strict=True):
        im = ax.pcolormesh(t, f / 1000, s, shading="auto", cmap=cmap, vmin=top - 80, vmax=top, rasterized=True)
        ax.set_ylabel("kHz")
        if change is not None and 0 < change - r["crop_start_s"] < r["crop_s"]:
            ax.axvline(change - r["crop_start_s"], color="cyan", lw=0.8, ls="--")
        what = str(r["name"]) + (f" ({r['system']})" if r["system"] and r["system"] != r["name"] else "")
        sdr = f", whole-stream SI-SDR {r['si_sdr']:.1f} dB" if np.isfinite(r.get("si_sdr", np.nan)) else ""
        ax.text(0.01, 0.95, what + sdr, color="white", fontsize=7, transform=ax.transAxes, va="top")
    axes[-1, 0].set_xlabel(f"time in the crop (s; it starts {pts['crop_start_s'].iloc[0]:.1f} s into the stream; "
                           "dashed: the stream's change)" if change is not None else
                           f"time in the crop (s; it starts {pts['crop_start_s'].iloc[0]:.1f} s into the stream)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="magnitude (dB, common scale)", shrink=0.8)
    # a spectrogram's texture compresses badly: 32 colour levels and 90 dpi keep the PNG small
    return _save(fig, path, pts, "example", tight=False, dpi=90)


# --------------------------------------------------------------------------- sweeps
def _objective(trials: pd.DataFrame) -> str:
    return "value" if "value" in trials else "values_0"


def _completed(trials: pd.DataFrame) -> pd.DataFrame:
    done = trials[trials["state"] == "COMPLETE"] if "state" in trials else trials
    return done.dropna(subset=[_objective(trials)]).sort_values("number")


def sweep_history(trials: pd.DataFrame, path: Path) -> Path:
    obj = _objective(trials)
    pts = _need(_completed(trials), "no trial of the sweep completed")
    pts = pts.assign(best_so_far=pts[obj].cummax())
    fig, ax = _plt().subplots(figsize=(5, 3.4))
    ax.plot(pts["number"], pts[obj], "o", ms=4, color="tab:blue", label="trial")
    ax.step(pts["number"], pts["best_so_far"], where="post", color="black", lw=1, label="best so far")
    metric = str(trials.attrs.get("metric") or "objective")
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"validation {metric} (dB for SI-SDR metrics)")
    ax.legend(fontsize=7)
    return _save(fig, path, pts, "trials")


def sweep_axes(trials: pd.DataFrame) -> tuple[str, str] | None:
    """The two parameters of the map: rate and temperature when both were swept, else the first two."""
    params = [c for c in trials if c.startswith("params_") and pd.api.types.is_numeric_dtype(trials[c])]
    pref = [c for c in ("params_refine.alpha", "params_distill.tau") if c in params]
    pick = pref if len(pref) == 2 else (pref + [c for c in params if c not in pref])[:2]
    return (pick[0], pick[1]) if len(pick) == 2 else None


def sweep_map(trials: pd.DataFrame, path: Path) -> Path:
    axes_ = sweep_axes(trials)
    if axes_ is None:
        raise Skip("the sweep searched fewer than two numeric parameters")
    x, y = axes_
    obj = _objective(trials)
    pts = _need(_completed(trials), "no trial of the sweep completed")
    fig, ax = _plt().subplots(figsize=(5, 3.8))
    sc = ax.scatter(pts[x], pts[y], c=pts[obj], cmap="viridis", s=30, edgecolor="black", linewidth=0.3)
    fig.colorbar(sc, ax=ax, label="validation objective")
    for col, setter in ((x, ax.set_xscale), (y, ax.set_yscale)):
        v = pts[col].to_numpy(float)
        if len(v) and v.min() > 0 and v.max() / v.min() > 20:
            setter("log")
    ax.set_xlabel(x.removeprefix("params_"))
    ax.set_ylabel(y.removeprefix("params_"))
    return _save(fig, path, pts, "trials")


def draw_sweep(run_dir: Path, out: Path | None = None) -> list[Path]:
    """The figures of a sweep folder (``trials.csv``); returns the PNG paths."""
    trials = pd.read_csv(run_dir / "trials.csv")
    prov = run_dir / "provenance.json"
    trials.attrs["metric"] = json.loads(prov.read_text()).get("metric", "") if prov.is_file() else ""
    out = out or run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    return _run_jobs([("sweep_history", lambda: sweep_history(trials, out / "sweep_history")),
                      ("sweep_map", lambda: sweep_map(trials, out / "sweep_map"))], out)


# --------------------------------------------------------------------------- drawing a run
def board_ids(board: pd.DataFrame) -> pd.Series:
    """Cell ids of a leaderboard without them (hand-made): one per distinct system and settings."""
    ident = [c for c in ("system", *VARIANTS) if c in board]
    return "row" + pd.Series(board[ident].map(_fmt).agg("|".join, axis=1).factorize()[0], index=board.index).astype(str)


def read_board(run_dir: Path) -> pd.DataFrame:
    """The run's leaderboard, with the columns older or hand-made ones lack (NaN), a ``cell_id``
    where there is none, and each cell's ``static_id`` from ``cells.csv``."""
    board = pd.read_csv(run_dir / "leaderboard.csv")
    for col in ("seed", "rule", "role", "alpha", "d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi",
                "si_sdri_mean", "total_macs_per_s"):
        if col not in board:
            board[col] = np.nan
    if "cell_id" not in board:
        board["cell_id"] = board_ids(board)
    cells = run_dir / "cells.csv"
    if cells.is_file() and "static_id" not in board:
        links = pd.read_csv(cells, usecols=lambda c: c in ("cell_id", "static_id"))
        if "static_id" in links:
            board = board.merge(links.fillna(""), on="cell_id", how="left")
    return board.copy()


def _forget(out: Path, name: str) -> None:
    """Remove an earlier drawing of figure ``name`` (a report must not show a figure of other data)."""
    for ext in (".png", ".pdf", ".csv"):
        (out / name).with_suffix(ext).unlink(missing_ok=True)


def _run_jobs(jobs: list[tuple[str, Callable[[], Path]]], out: Path) -> list[Path]:
    """Draw each figure. One whose axis the run lacks (:class:`Skip`) is left out with one line
    saying why; one that fails is a warning; the others are drawn either way."""
    paths = []
    for name, job in jobs:
        try:
            paths.append(job())
        except Skip as why:
            log.info("figure %s skipped: %s", name, why)
            _forget(out, name)
        except Exception as exc:  # noqa: BLE001 - a figure is never worth a lost report
            log.warning("figure %s failed: %s: %s", name, type(exc).__name__, exc)
        finally:
            _plt().close("all")
    return paths


def _csv(path: Path) -> pd.DataFrame:
    """A run file, or no rows when the run has none (a grid without streams, say)."""
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def _example(run_dir: Path, path: Path) -> Path:
    if not (run_dir / "example" / "example.json").is_file():
        raise Skip("the run saved no example stream (example/)")
    return spectrogram(run_dir, path)


def _distribution(run_dir: Path, path: Path, board: pd.DataFrame, col: dict[str, tuple]) -> Path:
    per, cells = _csv(run_dir / "per_utterance.csv"), _csv(run_dir / "cells.csv")
    if not len(per) or "cell_id" not in cells:
        raise Skip("the run has no per_utterance.csv or cells.csv")
    return gain_distribution(per, cells, path, board, col)


def _trajectory(run_dir: Path, path: Path, board: pd.DataFrame, col: dict[str, tuple]) -> Path:
    traj = _csv(run_dir / "trajectory.csv")
    if not len(traj):
        raise Skip("no streamed cell (no trajectory.csv)")
    return trajectory(traj, path, board, col)


def draw_all(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Draw every figure whose inputs the run has (the others are skipped, saying why); returns
    the PNG paths."""
    board = read_board(run_dir)
    out = out or run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    col = system_colours(board["system"])
    jobs: list[tuple[str, Callable[[], Path]]] = [
        ("gain_vs_rate", lambda: gain_vs_rate(board, out / "gain_vs_rate", col)),
        ("gain_vs_temperature", lambda: gain_vs_temperature(board, out / "gain_vs_temperature", col)),
        ("headroom", lambda: headroom(board, out / "headroom", col)),
        ("complexity", lambda: complexity(board, out / "complexity", col)),
        ("teachers", lambda: teachers(board, out / "teachers", col)),
        ("conditions", lambda: conditions(board, out / "conditions", col)),
        ("quality", lambda: quality(board, out / "quality", col)),
        ("speaker_verification", lambda: speaker_verification(board, out / "speaker_verification", col)),
        ("student_quality", lambda: student_quality(board, out / "student_quality", col)),
        ("readings", lambda: readings(board, out / "readings", col)),
        ("trajectory", lambda: _trajectory(run_dir, out / "trajectory", board, col)),
        ("gain_distribution", lambda: _distribution(run_dir, out / "gain_distribution", board, col)),
        ("spectrogram", lambda: _example(run_dir, out / "spectrogram")),
    ]
    paths = _run_jobs(jobs, out)
    if (run_dir / "trials.csv").is_file():
        paths += draw_sweep(run_dir, out)
    return paths


def draw_report(run_dir: Path, shown_as: Path | None = None) -> bool:
    """Figures, ``REPORT.md`` and ``report.html`` of a run folder; each part that fails is one
    warning and the others are still written. ``shown_as``: the folder the user will find the run
    in (``run_dir`` may be a temporary one), named in the redraw hint. True when all were written."""
    from bench.report.html import write_html
    from bench.report.markdown import write_report

    ok = True
    for what, job in (("figures", lambda: draw_all(run_dir)), ("REPORT.md", lambda: write_report(run_dir)),
                      ("report.html", lambda: write_html(run_dir))):
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - never a lost run: the tables are already written
            ok = False
            log.warning("%s failed (%s: %s); redraw with python -m bench.figures --run %s", what,
                        type(exc).__name__, exc, shown_as or run_dir)
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.figures", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run directory holding leaderboard.csv (e.g. results/losses), "
                                                "or a sweep's directory holding trials.csv")
    p.add_argument("--out", default=None, help="figure directory (default: <run>/figures)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_dir = Path(args.run)
    out = Path(args.out) if args.out else None
    if not (run_dir / "leaderboard.csv").is_file() and not (run_dir / "trials.csv").is_file():
        print(f"error: {run_dir / 'leaderboard.csv'} does not exist; run python -m bench.run first", file=sys.stderr)
        return 2
    try:
        if not (run_dir / "leaderboard.csv").is_file():
            paths = draw_sweep(run_dir, out)
        elif args.out:
            paths = draw_all(run_dir, out)
        else:
            return _print_report(run_dir)
    except (OSError, ValueError, KeyError) as exc:  # a damaged or hand-made run file: one line
        print(f"error: cannot draw {run_dir}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def _print_report(run_dir: Path) -> int:
    """Figures and both reports into the run folder, their paths printed; the exit status."""
    ok = draw_report(run_dir)
    for path in [*sorted((run_dir / "figures").glob("*.png")), run_dir / "REPORT.md", run_dir / "report.html"]:
        if path.is_file():
            print(path)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
