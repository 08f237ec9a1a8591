"""``python -m bench.figures --run results/losses``: draw the figures of a finished run.

Every figure is a PNG and a PDF in ``<run>/figures/`` (or ``--out``), without a title (captions
live in :data:`CAPTIONS` and in the run's report), with one colour per system across figures,
units on the axes, and 95 % CIs on every mean. A figure never averages over an axis silently:
it facets by condition, and its caption says what it pools.

- ``gain_vs_rate``: paired SI-SDR gain over the static embedding vs refinement rate, one panel per
  condition, one line per refiner (systems, control, ceiling), anchored at rate 0.
- ``headroom``: per condition, the gain of each reference, ceiling, control and the best rate of
  each system, with CIs.
- ``trajectory``: cosine between the embedding used for each block and the clean target's
  teacher embedding, over the stream, per condition and refiner.
- ``gain_distribution``: per-utterance paired SI-SDR gains over static (box + points).
- ``complexity``: SI-SDR gain over static vs total MACs per second, with the Pareto front.
- ``conditions``: SI-SDRi heat map, systems x conditions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CAPTIONS = {
    "gain_vs_rate": "Paired SI-SDR gain over the static embedding (dB, mean and 95 % bootstrap CI over test "
                    "mixtures) against the refinement rate alpha, one panel per condition; rate 0 is static by "
                    "definition. Students of several training seeds are drawn separately (markers), nothing is "
                    "averaged.",
    "headroom": "Per condition: paired SI-SDR gain over static (dB, 95 % CI) of the references (clean target, "
                "clean enrollment), the ceiling (teacher on the clean target's blocks), the shrink control and "
                "each system at its best rate on this test set (an optimistic pick: tune rates on validation).",
    "trajectory": "Cosine between the embedding used for each block and the teacher embedding of the clean "
                  "target, averaged over the test utterances of the condition, against time in the stream.",
    "gain_distribution": "Per-utterance paired SI-SDR gain over static (dB) of every refining cell, all "
                         "conditions pooled (one point per utterance and condition).",
    "complexity": "Pooled paired SI-SDR gain over static (dB, 95 % CI) against total MACs per second of audio "
                  "(backbone + refiner, log scale); the line joins the Pareto-optimal cells.",
    "conditions": "Mean SI-SDRi (dB) of every cell on every condition.",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    # bbox "tight" keeps legends placed outside the axes
    fig.savefig(path.with_suffix(".png"), dpi=150, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    _plt().close(fig)
    return path.with_suffix(".png")


def _role(board: pd.DataFrame, *roles: str) -> pd.DataFrame:
    """Rows whose refiner has one of ``roles`` (``system``, ``ceiling``, ``control``, ``reference``,
    ``baseline``), from the leaderboard's ``role`` column (see ``bench.refine``); a copy."""
    if "role" not in board:
        return board.iloc[0:0].copy()
    return board[board["role"].isin(roles)].copy()


def _label(r: pd.Series) -> str:
    """System label with the axes that distinguish cells of one system (rule, seed)."""
    lab = str(r["system"])
    rule = r.get("rule")
    if isinstance(rule, str) and rule and rule != "ema":
        lab += f" ({rule})"
    return lab


def palette(labels: list[str]) -> dict[str, tuple]:
    """One colour per system label, stable across figures (sorted labels, tab20)."""
    import seaborn as sns

    uniq = sorted(set(labels))
    colours = sns.color_palette("tab20", max(len(uniq), 1))
    return dict(zip(uniq, colours, strict=False))


def _seed(v) -> str:
    """A student's training seed as text ("" for cells without one)."""
    try:
        return "" if v is None or v == "" or pd.isna(v) else str(int(float(v)))
    except (TypeError, ValueError):
        return str(v)


def _conditions(board: pd.DataFrame) -> list[str]:
    return [c for c in dict.fromkeys(board["condition"]) if c != "all"]


def _errbar(ax, x, m, lo, hi, **kw):
    m, lo, hi = (np.asarray(v, dtype=float) for v in (m, lo, hi))
    yerr = np.vstack([np.clip(m - lo, 0, None), np.clip(hi - m, 0, None)])
    yerr = np.where(np.isfinite(yerr), yerr, 0.0)
    ax.errorbar(x, m, yerr=yerr, capsize=3, **kw)


def gain_vs_rate(board: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    conds = _conditions(board)
    sub = _role(board[board["condition"] != "all"], "system", "control", "ceiling")
    sub = sub[sub["alpha"].fillna(0) > 0] if not sub.empty else sub
    sub = sub.assign(label=[_label(r) for _, r in sub.iterrows()]) if not sub.empty else sub.assign(label=[])
    colours = palette(list(sub["label"]) + list(_role(board, "reference")["system"]))
    n = max(1, len(conds))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.4), sharey=True, squeeze=False)
    for ax, cond in zip(axes[0], conds, strict=False):
        g = sub[sub["condition"] == cond]
        for (label, seed), h in g.groupby(["label", g["seed"].map(_seed)], sort=True, dropna=False):
            h = h.sort_values("alpha")
            x = np.r_[0.0, h["alpha"].to_numpy(float)]
            m = np.r_[0.0, h["d_si_sdr_mean"].to_numpy(float)]
            lo = np.r_[0.0, h["d_si_sdr_ci_lo"].to_numpy(float)]
            hi = np.r_[0.0, h["d_si_sdr_ci_hi"].to_numpy(float)]
            style = "--" if (h["role"] == "ceiling").any() else (":" if (h["role"] == "control").any() else "-")
            tag = f"{label} s{seed}" if seed else label
            _errbar(ax, x, m, lo, hi, color=colours.get(label), linestyle=style, marker="o", ms=3, label=tag)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("refinement rate alpha")
        ax.set_title(cond, fontsize=9)  # panel label (the condition), not a figure title
    axes[0][0].set_ylabel("SI-SDR gain over static (dB)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(4, len(labels)),
                   bbox_to_anchor=(0.5, -0.02 - 0.04 * (len(labels) // 4)))
    return _save(fig, path)


def headroom(board: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    per = board[board["condition"] != "all"]
    conds = _conditions(board)
    rows = []
    for cond in conds:
        c = per[per["condition"] == cond]
        for _, r in _role(c, "reference", "ceiling", "control").iterrows():
            rows.append((cond, f"{_label(r)}" + (f" a={r['alpha']:g}" if r.get("alpha", 0) else ""), r))
        sysr = _role(c, "system").dropna(subset=["d_si_sdr_mean"])
        sysr = sysr[sysr["alpha"].fillna(0) > 0]
        sysr = sysr.copy()
        sysr["label"] = [_label(r) for _, r in sysr.iterrows()]
        for label, g in sysr.groupby("label"):
            best = g.loc[g["d_si_sdr_mean"].idxmax()]
            rows.append((cond, f"{label} (best a={best['alpha']:g})", best))
    labels = sorted({lab for _, lab, _ in rows})
    colours = palette([lab.split(" a=")[0].split(" (best")[0] for lab in labels])
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(conds)), 4))
    w = 0.85 / max(1, len(labels))
    for i, lab in enumerate(labels):
        xs, m, lo, hi = [], [], [], []
        for k, cond in enumerate(conds):
            for c, lb, r in rows:
                if c == cond and lb == lab:
                    xs.append(k - 0.425 + w * (i + 0.5))
                    m.append(r["d_si_sdr_mean"])
                    lo.append(r["d_si_sdr_ci_lo"])
                    hi.append(r["d_si_sdr_ci_hi"])
        if xs:
            ax.bar(xs, m, width=w, color=colours.get(lab.split(" a=")[0].split(" (best")[0]), label=lab)
            _errbar(ax, xs, m, lo, hi, fmt="none", ecolor="black", elinewidth=0.8)
    ax.set_xticks(range(len(conds)), conds, rotation=20)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_ylabel("SI-SDR gain over static (dB)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def trajectory(traj: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    conds = list(dict.fromkeys(traj["condition"]))
    traj = traj.assign(label=[_label(r) for _, r in traj.iterrows()])
    traj = traj.assign(label=traj["label"] + np.where(traj["alpha"].fillna(0) > 0,
                                                      " a=" + traj["alpha"].astype(str), ""))
    colours = palette(list(traj["label"]))
    n = max(1, len(conds))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), sharey=True, squeeze=False)
    for ax, cond in zip(axes[0], conds, strict=False):
        g = traj[traj["condition"] == cond]
        for (label, seed), h in g.groupby(["label", g["seed"].map(_seed)], sort=True, dropna=False):
            tag = f"{label} s{seed}" if seed else label
            ax.plot(h["t_s"], h["cos_to_target"], color=colours.get(label), lw=1, label=tag)
        ax.set_xlabel("time in stream (s)")
        ax.set_title(cond, fontsize=9)
    axes[0][0].set_ylabel("cosine to clean-target embedding")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=6, loc="lower center", ncol=min(4, len(labels)),
                   bbox_to_anchor=(0.5, -0.02 - 0.04 * (len(labels) // 4)))
    return _save(fig, path)


def gain_distribution(per: pd.DataFrame, cells: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    import seaborn as sns

    cells = cells.copy()
    if "static_id" not in cells:
        cells["static_id"] = ""
    ref = per.merge(cells[["cell_id", "static_id"]], on="cell_id")
    base = per[["cell_id", "condition", "utt", "si_sdr"]].rename(columns={"cell_id": "static_id", "si_sdr": "base"})
    j = ref.merge(base, on=["static_id", "condition", "utt"])
    j = j[j["cell_id"] != j["static_id"]]
    j = j.merge(cells[["cell_id", "system", "alpha", "role"] + [c for c in ("rule", "seed") if c in cells]],
                on="cell_id")
    j = j[j["role"].isin(["system", "control", "ceiling"]) & (j["alpha"].fillna(0) > 0)]
    j["gain"] = j["si_sdr"] - j["base"]
    j["cell"] = [f"{_label(r)} a={r['alpha']:g}" + (f" s{_seed(r.get('seed'))}" if _seed(r.get("seed")) else "")
                 for _, r in j.iterrows()]
    order = sorted(j["cell"].unique())
    fig, ax = plt.subplots(figsize=(6, 0.3 * max(4, len(order)) + 1))
    if len(j):
        sns.boxplot(data=j, y="cell", x="gain", order=order, ax=ax, color="lightgrey", fliersize=0)
        sns.stripplot(data=j, y="cell", x="gain", order=order, ax=ax, size=1.5, alpha=0.5, color="black")
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("per-utterance SI-SDR gain over static (dB)")
    ax.set_ylabel("")
    return _save(fig, path)


def _pareto(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (lower x and higher y), sorted by x."""
    order = np.argsort(x)
    best, keep = -np.inf, []
    for i in order:
        if y[i] > best:
            keep.append(i)
            best = y[i]
    return np.array(keep, dtype=int)


def complexity(board: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    # deployable cells only: references, the ceiling and the control are not systems one could ship
    sub = board[(board["condition"] == "all")].dropna(subset=["total_macs_per_s"]).copy()
    if "role" in sub:
        sub = sub[sub["role"].isin(["system", "baseline", "backbone"])]
    if "d_si_sdr_mean" not in sub:
        sub["d_si_sdr_mean"] = np.nan
    sub["d"] = sub["d_si_sdr_mean"].where(sub["system"] != "static", 0.0)
    sub = sub.dropna(subset=["d"])
    sub["label"] = [_label(r) for _, r in sub.iterrows()]
    colours = palette(list(sub["label"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, g in sub.groupby("label"):
        _errbar(ax, g["total_macs_per_s"] / 1e6, g["d"], g.get("d_si_sdr_ci_lo", g["d"]).fillna(g["d"]),
                g.get("d_si_sdr_ci_hi", g["d"]).fillna(g["d"]), fmt="o", ms=4, color=colours.get(label), label=label)
    if len(sub):
        idx = _pareto(sub["total_macs_per_s"].to_numpy(float), sub["d"].to_numpy(float))
        front = sub.iloc[idx]
        ax.plot(front["total_macs_per_s"] / 1e6, front["d"], color="black", lw=0.8, label="Pareto front")
    ax.set_xscale("log")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("total MMAC per second of audio (log)")
    ax.set_ylabel("pooled SI-SDR gain over static (dB)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def conditions(board: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    import seaborn as sns

    sub = board[board["condition"] != "all"].copy()
    sub["label"] = [_label(r) + (f" a={r['alpha']:g}" if (r.get("alpha") or 0) > 0 else "") +
                    (f" s{_seed(r.get('seed'))}" if _seed(r.get("seed")) else "") for _, r in sub.iterrows()]
    pivot = sub.pivot_table(index="label", columns="condition", values="si_sdri_mean", aggfunc="first")
    fig, ax = plt.subplots(figsize=(1.3 * pivot.shape[1] + 3, 0.32 * pivot.shape[0] + 1.5))
    sns.heatmap(pivot, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": "SI-SDRi (dB)"})
    ax.set_ylabel("")
    return _save(fig, path)


def draw_all(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Draw every figure whose inputs the run has; returns the PNG paths."""
    board = pd.read_csv(run_dir / "leaderboard.csv")
    for col in ("seed", "rule", "role", "alpha", "d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi",
                "si_sdri_mean", "total_macs_per_s"):  # older, hand-made or all-failed leaderboards may lack them
        if col not in board:
            board[col] = np.nan
    out = out or run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    paths = [gain_vs_rate(board, out / "gain_vs_rate"), headroom(board, out / "headroom"),
             complexity(board, out / "complexity"), conditions(board, out / "conditions")]
    if (run_dir / "trajectory.csv").is_file():
        traj = pd.read_csv(run_dir / "trajectory.csv")
        if len(traj):
            paths.append(trajectory(traj, out / "trajectory"))
    if (run_dir / "per_utterance.csv").is_file() and (run_dir / "cells.csv").is_file():
        paths.append(gain_distribution(pd.read_csv(run_dir / "per_utterance.csv"), pd.read_csv(run_dir / "cells.csv"),
                                       out / "gain_distribution"))
    return paths


FIGURES = ("gain_vs_rate", "headroom", "complexity", "conditions", "trajectory", "gain_distribution")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.figures", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run directory holding leaderboard.csv (e.g. results/losses)")
    p.add_argument("--out", default=None, help="figure directory (default: <run>/figures)")
    args = p.parse_args(argv)
    run_dir = Path(args.run)
    if not (run_dir / "leaderboard.csv").is_file():
        print(f"error: {run_dir / 'leaderboard.csv'} does not exist; run python -m bench.run first", file=sys.stderr)
        return 2
    for path in draw_all(run_dir, Path(args.out) if args.out else None):
        print(path)
    if not args.out:
        from bench.report_md import write_report

        print(write_report(run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
