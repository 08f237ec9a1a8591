"""Figures and reports of the smoke run: every figure is drawn, every plotted point traces back to
a row of the run's files, and ``report.html`` works in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report import figures
from bench.report.captions import FIGURES

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
NO_CHROMIUM = ("headless Chromium is not installed (Debian package `chromium`, which scripts/setup.sh installs "
               "when run as root)")
# columns of a figure's points file that are not copied from the row it comes from
DERIVED = {"source", "label", "line", "bar", "pick", "anchor", "what", "gain", "best_so_far", "params_per_block",
           "pareto_total_macs_per_s", "pareto_params_per_block", "static_id", "static_si_sdr", "name", "file",
           "crop_start_s", "crop_s"}


def _same(a: pd.Series, b: pd.Series) -> bool:
    """Where the point has a value (an empty cell is nothing plotted), it equals the source's: as
    numbers where both are numeric, else as text."""
    keep = a.notna().to_numpy()
    a, b = a[keep], b[keep]
    x, y = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    if x.notna().eq(a.notna()).all() and y.notna().eq(b.notna()).all():
        return bool(np.all((x.to_numpy(float) == y.to_numpy(float)) | (x.isna() & y.isna()).to_numpy()))
    return a.fillna("").astype(str).str.removesuffix(".0").tolist() == b.fillna("").astype(str).str.removesuffix(
        ".0").tolist()


def _trace(pts: pd.DataFrame, table: pd.DataFrame, on: list[str], name: str) -> None:
    """Every row of ``pts`` is a row of ``table`` (matched ``on``), with the same value in every
    column the two share."""
    j = pts.reset_index(drop=True).merge(table.drop_duplicates(on), on=on, how="left", suffixes=("", "__src"),
                                         indicator=True)
    assert (j["_merge"] == "both").all(), f"{name}: points without a source row:\n{j[j['_merge'] != 'both'][on]}"
    for col in pts.columns:
        if col in on or col in DERIVED or f"{col}__src" not in j:
            continue
        assert _same(j[col], j[f"{col}__src"]), f"{name}: column {col} differs from its source row"


def _check_points(name: str, pts: pd.DataFrame, run: Path) -> None:
    board = pd.read_csv(run / "leaderboard.csv")
    assert len(pts), f"{name} plots nothing"
    source = set(pts["source"])
    assert len(source) == 1, source
    source = source.pop()
    if source == "leaderboard":
        anchor = pts["anchor"].astype(bool) if "anchor" in pts else pd.Series(False, index=pts.index)
        _trace(pts[~anchor], board, ["cell_id", "condition"], name)
        if anchor.any():  # the static baseline's gain over itself: its row, and 0 by definition
            a = pts[anchor]
            _trace(a[["cell_id", "condition", "system", "role"]], board, ["cell_id", "condition"], name)
            assert (a["role"] == "baseline").all() and (a["d_si_sdr_mean"] == 0).all()
    elif source == "per_utterance":
        per = pd.read_csv(run / "per_utterance.csv")
        _trace(pts, per, ["cell_id", "condition", "utt"], name)
        base = per.rename(columns={"cell_id": "static_id", "si_sdr": "static_si_sdr"})
        _trace(pts[["static_id", "condition", "utt", "static_si_sdr"]], base, ["static_id", "condition", "utt"], name)
        np.testing.assert_allclose(pts["gain"], pts["si_sdr"] - pts["static_si_sdr"])
    elif source == "trajectory":
        _trace(pts, pd.read_csv(run / "trajectory.csv"), ["cell_id", "condition", "block"], name)
    elif source == "example":
        per = pd.read_csv(run / "per_utterance.csv")
        scored = pts[pts["cell_id"].fillna("") != ""]
        _trace(scored, per, ["cell_id", "condition", "utt"], name)
        assert all((run / f).is_file() for f in pts["file"])
    else:
        raise AssertionError(f"{name}: unknown source {source}")


def _draw_every_figure(run: Path, out: Path) -> dict[str, Path]:
    """Each figure function on the run's files whose axis the smoke grid has."""
    board = figures.read_board(run)
    per, cells = pd.read_csv(run / "per_utterance.csv"), pd.read_csv(run / "cells.csv")
    drawn = {
        "gain_vs_rate": figures.gain_vs_rate(board, out / "gain_vs_rate"),
        "headroom": figures.headroom(board, out / "headroom"),
        "complexity": figures.complexity(board, out / "complexity"),
        "conditions": figures.conditions(board, out / "conditions"),
        "quality": figures.quality(board, out / "quality"),
        "speaker_verification": figures.speaker_verification(board, out / "speaker_verification"),
        "student_quality": figures.student_quality(board, out / "student_quality"),
        "trajectory": figures.trajectory(pd.read_csv(run / "trajectory.csv"), out / "trajectory", board),
        "gain_distribution": figures.gain_distribution(per, cells, out / "gain_distribution", board),
        "spectrogram": figures.spectrogram(run, out / "spectrogram"),
    }
    return drawn


def test_every_figure_from_the_smoke_run_traces_back_to_its_rows(smoke_run, tmp_path):
    code, run, _, _ = smoke_run
    assert code == 0
    drawn = _draw_every_figure(run, tmp_path)
    # the smoke grid has one temperature: that figure is skipped (drawn in tests/report/report/test_figures.py)
    with pytest.raises(figures.Skip, match="more than one distillation temperature"):
        figures.gain_vs_temperature(figures.read_board(run), tmp_path / "gain_vs_temperature")
    # and no student-space cell: the readings figure is skipped (drawn in tests/test_readings.py)
    with pytest.raises(figures.Skip, match="student-space reading"):
        figures.readings(figures.read_board(run), tmp_path / "readings")
    # and one teacher: the teachers figure is skipped (drawn in tests/report/test_figures.py)
    with pytest.raises(figures.Skip, match="fewer than two teachers"):
        figures.teachers(figures.read_board(run), tmp_path / "teachers")
    skipped = {"sweep_history", "sweep_map", "gain_vs_temperature", "readings", "teachers"}
    missing = set(FIGURES) - set(drawn) - skipped
    assert not missing, missing
    for name, png in drawn.items():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
        assert png.with_suffix(".pdf").stat().st_size > 1000, name
        _check_points(name, pd.read_csv(png.with_suffix(".csv")), run)


def test_the_run_writes_figures_reports_and_a_small_example(smoke_run):
    import soundfile as sf

    _, run, _, _ = smoke_run
    for name in ("gain_vs_rate", "headroom", "complexity", "conditions", "quality", "speaker_verification",
                 "trajectory", "gain_distribution", "spectrogram"):
        for ext in ("png", "pdf", "csv"):
            assert (run / "figures" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
        _check_points(name, pd.read_csv(run / "figures" / f"{name}.csv"), run)
    meta = json.loads((run / "example" / "example.json").read_text())
    assert meta["condition"] == "voice_change" and [s["name"] for s in meta["signals"]] == [
        "mixture", "static", "refined", "clean"]
    for s in meta["signals"]:
        info = sf.info(str(run / "example" / s["file"]))
        assert info.subtype == "PCM_16" and info.samplerate == 16000 and 0 < info.duration <= 6.0
    corpora = json.loads((run / "corpora.json").read_text())
    assert corpora["train"] and corpora["test"]
    report = (run / "REPORT.md").read_text()
    assert "figures/spectrogram.png" in report and "Corpus hashes" in report and "example/refined.wav" in report
    assert (run / "report.html").stat().st_size < 5 * 2**20


# --------------------------------------------------------------------------- report.html in a browser
class _Dom(HTMLParser):
    """The leaderboard rows (``data-i``, hidden) in document order and the root's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, bool]] = []
        self.root: dict[str, str] = {}
        self.audio = 0
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.root = {k: v or "" for k, v in a.items()}
        elif tag == "tr" and "data-i" in a:
            self.rows.append((int(a["data-i"] or -1), "hidden" in a))
        elif tag == "audio":
            self.audio += 1
        elif tag == "img" and (a.get("src") or "").startswith("data:image/png;base64,"):
            self.images += 1


def _render(page: Path, fragment: str, tmp: Path) -> _Dom:
    url = page.resolve().as_uri() + fragment
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp / 'profile'}", "--dump-dom", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0 and "<html" in res.stdout, res.stderr[-2000:]
    dom = _Dom()
    dom.feed(res.stdout)
    assert dom.root.get("data-report-ready") == "ok", dom.root
    return dom


def test_report_html_is_self_contained(smoke_run):
    _, run, _, _ = smoke_run
    text = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "an external resource"
    assert "<link" not in text and not re.search(r"<script[^>]+src", text)
    assert text.count('src="data:image/png;base64,') == len(list((run / "figures").glob("*.png")))
    assert text.count('<audio controls') == 4


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_report_html_in_chromium_shows_every_row_sorts_and_filters(smoke_run, tmp_path):
    _, run, _, _ = smoke_run
    board = pd.read_csv(run / "leaderboard.csv")
    page = run / "report.html"
    dom = _render(page, "", tmp_path)
    assert sorted(i for i, _ in dom.rows) == list(range(len(board)))
    assert not any(hidden for _, hidden in dom.rows) and dom.root["data-rows-shown"] == str(len(board))
    assert dom.audio == 4 and dom.images == len(list((run / "figures").glob("*.png")))
    # sorting by a metric column: descending, missing values last, ties in file order
    dom = _render(page, "#sort=d_si_sdr_mean:desc", tmp_path)
    want = board.assign(i=np.arange(len(board))).sort_values(["d_si_sdr_mean", "i"], ascending=[False, True],
                                                             na_position="last")["i"].tolist()
    assert [i for i, _ in dom.rows] == want
    assert board["d_si_sdr_mean"].notna().sum() > 3
    # a filter by condition and by loss
    dom = _render(page, "#condition=clean&loss=mse", tmp_path)
    shown = {i for i, hidden in dom.rows if not hidden}
    want_rows = set(np.flatnonzero((board["condition"] == "clean") & (board["loss"] == "mse")))
    assert shown == want_rows and len(shown) > 0
    assert dom.root["data-rows-shown"] == str(len(want_rows))
