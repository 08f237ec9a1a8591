"""Markup in config strings (a hub id, a corpus path, a command line) never reaches REPORT.md or
leaderboard.md as markup: Markdown viewers render raw HTML."""

from __future__ import annotations

import json

import pandas as pd

from bench.report.markdown import write_report

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
TICK = "`</code><img src=y onerror=alert(3)>`"


def _board() -> pd.DataFrame:
    rows = []
    for cond in ("clean", "all"):
        rows.append({"condition": cond, "system": f"static{IMG}", "role": "baseline", "alpha": 0.0, "rule": SCRIPT,
                     "seed": "", "teacher_weights": f"hub:{TICK}", "pse_source": "train",
                     "train_corpus": f"manifest:/data/{IMG}.csv", "test_corpus": f"(same){SCRIPT}",
                     "loss": "", "si_sdr_mean": 1.0, "d_si_sdr_mean": float("nan")})
    return pd.DataFrame(rows)


def _assert_inert(text: str) -> None:
    for tag in ("<script", "<img", "</code"):
        assert tag not in text, tag


def test_report_md_escapes_markup_from_config_strings(tmp_path):
    _board().to_csv(tmp_path / "leaderboard.csv", index=False)
    (tmp_path / "provenance.json").write_text(json.dumps({
        "grid": "g", "argv": ["python -m bench.run", "--set", f"teacher.hub_id={SCRIPT}"], "date": IMG,
        "git_commit": TICK, "device": "cpu", "versions": "torch 2"}))
    text = write_report(tmp_path).read_text()
    _assert_inert(text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "static&lt;img" in text


def test_leaderboard_md_escapes_markup_too():
    from bench.grid import _markdown_report

    common = {"date": IMG, "git_commit": TICK, "device": "cpu", "versions": SCRIPT}
    text = _markdown_report("g", _board(), common, ["python -m bench.run", "--set", f"corpus.path={IMG}"])
    _assert_inert(text)
    assert "&lt;img src=x onerror=alert(2)&gt;" in text


def test_md_text_escapes_what_markdown_and_html_read():
    from bench.report.markdown import md_text

    assert md_text("a|b") == "a\\|b" and md_text("[x](javascript:y)") == "\\[x\\](javascript:y)"
    assert md_text("`x`") == "\\`x\\`" and md_text("a & b\nc") == "a &amp; b c"
    assert md_text("oracle_clean") == "oracle_clean"
