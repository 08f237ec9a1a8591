"""``python -m bench.figures --run results/losses``: draw the paper figures of a finished run.

Figures (PNG, written to ``<run>/figures/`` unless ``--out``):
- ``delta_vs_alpha.png``: paired SI-SDR gain over the static embedding vs refinement rate, per
  loss and for the teacher oracle, with 95 % CIs (pooled over conditions).
- ``headroom.png``: per condition, the headroom (``oracle_clean`` minus static) and the best
  paired gain of each refiner (teacher oracle, each student loss).
- ``complexity.png``: SI-SDR against total MACs per second of audio, one point per system.
- ``conditions.png``: SI-SDRi heat map, systems x conditions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, path: Path, title: str, ylabel: str, xlabel: str | None = None, legend: int = 7) -> Path:
    """Label, lay out, save (PNG, 120 dpi) and close a figure."""
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=legend)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def _pooled(board: pd.DataFrame) -> pd.DataFrame:
    return board[board["condition"] == "all"]


def _role(board: pd.DataFrame, role: str) -> pd.DataFrame:
    """Rows whose refiner has ``role`` (``system``: the refiners under test; ``ceiling``; ``reference``;
    ``control``; ``baseline``), from the leaderboard's ``role`` column (see ``bench.refine``)."""
    if "role" not in board:
        return board.iloc[0:0]
    return board[board["role"] == role]


def delta_vs_alpha(board: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    sub = _role(_pooled(board), "system")
    fig, ax = plt.subplots(figsize=(6, 4))
    for system, g in sub.groupby("system"):
        agg = g.groupby("alpha").agg(m=("d_si_sdr_mean", "mean"), lo=("d_si_sdr_ci_lo", "mean"),
                                     hi=("d_si_sdr_ci_hi", "mean")).reset_index().sort_values("alpha")
        ax.errorbar(agg["alpha"], agg["m"], yerr=[agg["m"] - agg["lo"], agg["hi"] - agg["m"]], marker="o",
                    capsize=3, label=system, linestyle="-" if str(system).startswith("student") else "--")
    ax.axhline(0.0, color="grey", lw=0.8)
    return _finish(fig, ax, path, "Refinement gain vs rate (95 % CI; seeds averaged)",
                   "SI-SDR gain over static embedding (dB)", "refinement rate alpha", legend=8)


def headroom(board: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    per_cond = board[board["condition"] != "all"]
    sub = _role(per_cond, "system")
    upper = _role(per_cond, "ceiling")
    conds = list(dict.fromkeys(per_cond["condition"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(conds)), 4))
    x = np.arange(len(conds))
    # headroom = the clean-target oracle's paired gain over static
    head = [upper[upper["condition"] == c]["d_si_sdr_mean"].max() for c in conds]
    ax.bar(x, head, width=0.8, color="lightgrey", label="headroom (oracle_target - static, best rate)")
    systems = sorted(set(sub["system"]))
    w = 0.8 / max(1, len(systems))
    for i, s in enumerate(systems):
        g = sub[sub["system"] == s]
        best = [g[g["condition"] == c]["d_si_sdr_mean"].max() for c in conds]
        ax.bar(x - 0.4 + w * (i + 0.5), best, width=w, label=f"{s} (best alpha/seed)")
    ax.set_xticks(x, conds, rotation=20)
    ax.axhline(0.0, color="grey", lw=0.8)
    return _finish(fig, ax, path, "Headroom per condition and what refiners recover", "SI-SDR over static (dB)")


def complexity(board: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    sub = _pooled(board).dropna(subset=["total_macs_per_s"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for system, g in sub.groupby("system"):
        ax.scatter(g["total_macs_per_s"] / 1e6, g["si_sdr_mean"], label=system, s=25)
    ax.set_xscale("log")
    return _finish(fig, ax, path, "Quality vs compute", "SI-SDR (dB)", "total MMAC per second of audio (log)")


def conditions(board: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    import seaborn as sns

    sub = board[board["condition"] != "all"].copy()
    sub["label"] = sub["system"] + np.where(sub["alpha"].fillna(0) > 0, " a=" + sub["alpha"].astype(str), "")
    pivot = sub.pivot_table(index="label", columns="condition", values="si_sdri_mean", aggfunc="mean")
    fig, ax = plt.subplots(figsize=(1.2 * pivot.shape[1] + 3, 0.35 * pivot.shape[0] + 1.5))
    sns.heatmap(pivot, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": "SI-SDRi (dB)"})
    return _finish(fig, ax, path, "SI-SDRi per system and condition", "", legend=0)


FIGURES = {"delta_vs_alpha": delta_vs_alpha, "headroom": headroom, "complexity": complexity,
           "conditions": conditions}


def draw_all(run_dir: Path, out: Path | None = None) -> list[Path]:
    board = pd.read_csv(run_dir / "leaderboard.csv")
    out = out or run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    return [fn(board, out / f"{name}.png") for name, fn in FIGURES.items()]


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
