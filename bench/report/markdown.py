"""``REPORT.md`` of a finished run: provenance, the per-condition comparison with CIs, figures
with their captions. Written by ``bench.run`` after the figures; redraw with
``python -m bench.figures --run DIR`` (which rewrites it too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]|"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                                   "\n": " ", "\r": " "})


def md_text(value: object) -> str:
    """``value`` as literal Markdown text: HTML's ``& < >`` as entities, Markdown's code, emphasis,
    link and table characters escaped, line breaks as spaces. Every string that comes from a
    config, a command line or a file goes through it (Markdown viewers render raw HTML)."""
    return str(value).translate(_MD_SPECIAL)


def _ci(r: pd.Series, col: str, digits: int = 2) -> str:
    m, lo, hi = (r.get(f"{col}_{k}") for k in ("mean", "ci_lo", "ci_hi"))
    if m is None or not np.isfinite(m):
        return ""
    if lo is None or not np.isfinite(lo):
        return f"{m:+.{digits}f}"
    return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _p(r: pd.Series, col: str) -> str:
    v = r.get(col)
    return f"{v:.2g}" if v is not None and np.isfinite(v) else ""


def comparison_table(board: pd.DataFrame, condition: str) -> str:
    """Every cell on one condition: absolute SI-SDRi, PESQ and STOI, the paired SI-SDR gain over
    static and over the shrink control with 95 % CIs and Holm-corrected p-values, the late-part
    gain, the trajectory cosine and the headroom (ceiling - static)."""
    sub = board[board["condition"] == condition]
    head = ["system", "role", "alpha", "rule", "seed", "SI-SDRi", "PESQ", "STOI", "vs static", "p (Holm)",
            "vs shrink", "late vs static", "traj cos", "headroom", "MMAC/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in sub.iterrows():
        seed = r.get("seed")
        seed = "" if seed is None or (isinstance(seed, float) and not np.isfinite(seed)) else str(seed).split(".")[0]
        alpha = r.get("alpha")
        cells = [md_text(r["system"]), md_text(r.get("role", "")),
                 "" if alpha is None or not np.isfinite(alpha) else f"{alpha:g}",
                 md_text(r.get("rule") or "") if isinstance(r.get("rule"), str) else "", md_text(seed),
                 _ci(r, "si_sdri"), _ci(r, "pesq", 3), _ci(r, "stoi", 3), _ci(r, "d_si_sdr"), _p(r, "p_d_si_sdr_holm"),
                 _ci(r, "ds_si_sdr"), _ci(r, "d_late_si_sdr"),
                 f"{r['traj_cos_mean']:.3f}" if np.isfinite(r.get("traj_cos_mean", np.nan)) else "",
                 _ci(r, "headroom_si_sdr"),
                 f"{r['total_macs_per_s'] / 1e6:.1f}" if np.isfinite(r.get("total_macs_per_s", np.nan)) else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _values(board: pd.DataFrame, col: str) -> list[str]:
    return sorted({str(v) for v in board.get(col, pd.Series(dtype=str)).dropna() if str(v)})


def provenance_items(run_dir: Path, board: pd.DataFrame) -> list[tuple[str, str]]:
    """``(what, value)`` pairs both reports show: command, date, commit, device, versions, teacher
    and backbone weights, corpora and their content hashes (``corpora.json``, when recorded)."""
    prov: dict[str, Any] = {}
    if (run_dir / "provenance.json").is_file():
        prov = json.loads((run_dir / "provenance.json").read_text())
    items = [("Command", " ".join(prov.get("argv") or []) or "?"), ("Date", str(prov.get("date", "?"))),
             ("Commit", str(prov.get("git_commit", "?"))), ("Device", str(prov.get("device", "?"))),
             ("Versions", str(prov.get("versions", "?"))),
             ("Teacher weights", "; ".join(_values(board, "teacher_weights")) or "?"),
             ("Backbone weights", "; ".join(_values(board, "pse_source")) or "?"),
             ("Corpora", f"trained on {', '.join(_values(board, 'train_corpus')) or '?'}; "
                         f"tested on {', '.join(_values(board, 'test_corpus')) or '?'}")]
    if (run_dir / "corpora.json").is_file():
        hashes = json.loads((run_dir / "corpora.json").read_text())
        items.append(("Corpus hashes", "; ".join(f"{split} {name}: {key}" for split in ("train", "test")
                                                 for name, key in (hashes.get(split) or {}).items())))
    return items


def _example_line(run_dir: Path) -> list[str]:
    """Links to the audio of the spectrogram example (``example/``), when the run has one."""
    meta_path = run_dir / "example" / "example.json"
    if not meta_path.is_file():
        return []
    meta = json.loads(meta_path.read_text())
    links = ", ".join(f"[{md_text(s['name'])}](example/{quote(str(s['file']))})" for s in meta.get("signals", []))
    return [f"Audio of the spectrogram example ({md_text(meta.get('condition'))}, stream {md_text(meta.get('utt'))}, "
            f"{meta.get('crop_s', 0):.1f} s from {meta.get('crop_start_s', 0):.1f} s): {links}", ""]


def write_report(run_dir: Path) -> Path:
    """Write ``<run_dir>/REPORT.md`` from the run's leaderboard, provenance and figures."""
    from bench.cache import atomic_write_text
    from bench.report.captions import CAPTIONS

    board = pd.read_csv(run_dir / "leaderboard.csv")
    prov: dict[str, Any] = {}
    if (run_dir / "provenance.json").is_file():
        prov = json.loads((run_dir / "provenance.json").read_text())
    lines = [f"# Report: {md_text(prov.get('grid', run_dir.name))}", "",
             "A self-contained version with a sortable, filterable leaderboard and the example's audio is "
             "`report.html` (opens from disk).", ""]
    lines += [f"- {what}: {md_text(value)}" for what, value in provenance_items(run_dir, board)]
    lines += ["",
              "Every number is a mean over test mixtures with its 95 % bootstrap CI; `vs static` / `vs shrink` are "
              "paired differences of SI-SDR (dB) against the static embedding and against the shrink control at the "
              "same rate; `p (Holm)` is the Wilcoxon signed-rank p-value of the gain over static, Holm-corrected across "
              "every comparison of the grid; `late` scores the part of a stream after its change; `headroom` is the "
              "ceiling (teacher on the clean target's blocks, same rate) minus static. Each figure's plotted points "
              "are in `figures/<name>.csv`, keyed by the leaderboard row they come from.", ""]
    figs = run_dir / "figures"
    for name, caption in CAPTIONS.items():
        if (figs / f"{name}.png").is_file():
            lines += [f"![{name}](figures/{name}.png)", "", f"*{name}.* {caption}", ""]
            if name == "spectrogram":
                lines += _example_line(run_dir)
    for cond in [c for c in dict.fromkeys(board["condition"]) if c != "all"] + ["all"]:
        title = "Pooled over conditions (whole mixtures resampled)" if cond == "all" else f"Condition: {cond}"
        lines += [f"## {title}", "", comparison_table(board, cond), ""]
    path = run_dir / "REPORT.md"
    atomic_write_text(path, "\n".join(lines))
    return path
