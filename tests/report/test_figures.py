from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import figures


def _board() -> pd.DataFrame:
    rows = []
    for cond in ("clean", "competing", "all"):
        for system, role, alpha, loss in [
            ("static", "baseline", 0.0, ""), ("oracle", "system", 0.5, ""), ("oracle_target", "ceiling", 0.5, ""),
            ("student-mse", "system", 0.2, "mse"), ("student-mse", "system", 0.5, "mse"),
            ("student-contrastive", "system", 0.5, "contrastive"),
        ]:
            d = 0.0 if system == "static" else alpha
            rows.append({
                "system": system, "role": role, "alpha": alpha, "loss": loss, "condition": cond, "si_sdr_mean": 5 + d,
                "si_sdri_mean": 3 + d, "d_si_sdr_mean": d, "d_si_sdr_ci_lo": d - 0.1, "d_si_sdr_ci_hi": d + 0.1,
                "headroom_si_sdr_mean": 1.0, "total_macs_per_s": 5e7 + (1e8 if system == "oracle" else 1e6),
            })
    return pd.DataFrame(rows)


def test_draw_all_writes_pngs(tmp_path):
    _board().to_csv(tmp_path / "leaderboard.csv", index=False)
    paths = figures.draw_all(tmp_path)
    assert {p.stem for p in paths} == {"gain_vs_rate", "headroom", "complexity", "conditions"}
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert p.with_suffix(".pdf").stat().st_size > 1000


def test_cli_missing_run_is_clear_error(tmp_path, capsys):
    assert figures.main(["--run", str(tmp_path / "nope")]) == 2
    assert "leaderboard.csv" in capsys.readouterr().err


def test_nan_values_do_not_crash(tmp_path):
    b = _board()
    b.loc[b["system"] == "oracle", "total_macs_per_s"] = np.nan
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    assert len(figures.draw_all(tmp_path)) == 4


def test_report_lists_figures_captions_and_tables(tmp_path):
    from bench.report.markdown import write_report

    _board().to_csv(tmp_path / "leaderboard.csv", index=False)
    figures.draw_all(tmp_path)
    text = write_report(tmp_path).read_text()
    for name in ("gain_vs_rate", "headroom", "complexity", "conditions"):
        assert f"figures/{name}.png" in text and (tmp_path / "figures" / f"{name}.png").is_file()
    assert "## Condition: competing" in text and "student-mse" in text and "vs shrink" in text


def _traced(points: pd.DataFrame, board: pd.DataFrame, cols: list[str]) -> None:
    """Every non-anchor point is a board row (by cell id and condition) with the same values."""
    b = board.assign(cell_id=figures.board_ids(board))
    j = points[~points.get("anchor", pd.Series(False, index=points.index)).astype(bool)].merge(
        b, on=["cell_id", "condition"], suffixes=("", "_b"))
    assert len(j) == len(points[~points.get("anchor", pd.Series(False, index=points.index)).astype(bool)])
    for c in cols:
        np.testing.assert_array_equal(j[c].to_numpy(float), j[f"{c}_b"].to_numpy(float))


def test_every_figure_writes_the_points_it_plots(tmp_path):
    b = _board()
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    figures.draw_all(tmp_path)
    for name in ("gain_vs_rate", "headroom", "complexity", "conditions"):
        pts = pd.read_csv(tmp_path / "figures" / f"{name}.csv")
        assert len(pts) and (pts["source"] == "leaderboard").all()
    rate = pd.read_csv(tmp_path / "figures" / "gain_vs_rate.csv")
    _traced(rate, b, ["d_si_sdr_mean", "d_si_sdr_ci_lo", "d_si_sdr_ci_hi", "alpha"])
    # one anchor at rate 0 per line and condition: the static row, gain 0
    anchors = rate[rate["anchor"]]
    assert (anchors["system"] == "static").all() and (anchors["d_si_sdr_mean"] == 0).all()
    assert len(anchors) == rate[~rate["anchor"]].groupby(["line", "condition"]).ngroups
    # headroom: each system at its best rate only, the rate kept with the point
    head = pd.read_csv(tmp_path / "figures" / "headroom.csv")
    best = head[head["system"] == "student-mse"]
    assert (best["alpha"] == 0.5).all() and len(best) == 2  # clean, competing
    _traced(pd.read_csv(tmp_path / "figures" / "conditions.csv"), b, ["si_sdri_mean"])


def test_cells_differing_in_a_setting_are_never_merged(tmp_path):
    b = _board()
    extra = b[b["system"] == "student-mse"].copy()
    b["gate"] = "none"
    extra["gate"] = "energy"
    extra["d_si_sdr_mean"] += 1.0
    b = pd.concat([b, extra], ignore_index=True)
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    figures.draw_all(tmp_path)
    cond = pd.read_csv(tmp_path / "figures" / "conditions.csv")
    assert cond.groupby("condition")["label"].nunique().eq(cond.groupby("condition").size()).all()
    assert {"student-mse a=0.5 gate=energy", "student-mse a=0.5 gate=none"} <= set(cond["label"])
    rate = pd.read_csv(tmp_path / "figures" / "gain_vs_rate.csv")
    assert {"student-mse gate=energy", "student-mse gate=none"} <= set(rate["line"])


def test_temperature_and_speaker_figures_when_the_grid_has_them(tmp_path):
    b = _board()
    rows = []
    for tau in (0.05, 0.1, 0.3):
        r = b[b["system"] == "student-contrastive"].copy()
        r["tau"], r["d_si_sdr_mean"] = tau, tau
        rows.append(r)
    b = pd.concat([b[b["system"] != "student-contrastive"], *rows], ignore_index=True)
    stu = b["system"].str.startswith("student-")
    b["teacher"], b["teacher_eer"] = "ge2e", 0.05
    b["student_eer"] = np.where(stu, 0.1 + b["tau"].fillna(0), np.nan)
    b["student_agreement"] = np.where(stu, 0.8, np.nan)
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    stems = {p.stem for p in figures.draw_all(tmp_path)}
    assert {"gain_vs_temperature", "speaker_verification"} <= stems
    temp = pd.read_csv(tmp_path / "figures" / "gain_vs_temperature.csv")
    assert temp.groupby(["line", "condition"])["tau"].nunique().eq(3).all()
    _traced(temp, b, ["tau", "d_si_sdr_mean"])
    spk = pd.read_csv(tmp_path / "figures" / "speaker_verification.csv")
    students = spk[spk["what"] == "student"]
    # one point per distinct student: mse (one), contrastive (three temperatures); the teacher once
    assert len(students) == 4 and (spk["what"] == "teacher").sum() == 1
    _traced(students, b, ["student_eer", "student_agreement"])


def test_student_quality_plots_each_refining_student_against_its_eer_agreement_and_mean_cosine(tmp_path):
    b = _board()
    stu = b["system"].str.startswith("student-")
    b["teacher"], b["teacher_eer"], b["teacher_mean_cos"] = "ge2e", 0.05, 0.74
    b["student_eer"] = np.where(stu, 0.2 + b["alpha"], np.nan)
    b["student_agreement"] = np.where(stu, 0.7, np.nan)
    b["student_mean_cos"] = np.where(stu, np.where(b["loss"] == "contrastive", 0.04, 0.97), np.nan)
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    assert "student_quality" in {p.stem for p in figures.draw_all(tmp_path)}
    pts = pd.read_csv(tmp_path / "figures" / "student_quality.csv")
    # the pooled row of each student cell (three), nothing of the teacher oracle or the references
    assert len(pts) == 3 and set(pts["condition"]) == {"all"} and pts["system"].str.startswith("student-").all()
    _traced(pts, b, ["student_eer", "student_mean_cos", "d_si_sdr_mean"])
    b.drop(columns=["student_mean_cos"]).to_csv(tmp_path / "leaderboard.csv", index=False)
    import pytest

    with pytest.raises(figures.Skip, match="no refining students"):
        figures.student_quality(figures.read_board(tmp_path), tmp_path / "sq")


def test_quality_plots_every_cells_pooled_pesq_stoi_and_dnsmos_with_the_mixture_as_a_line(tmp_path):
    import pytest

    b = _board()
    rng = np.random.default_rng(1)
    for m in ("pesq", "stoi", "dnsmos_ovrl"):
        b[f"{m}_mean"] = rng.uniform(1.0, 3.0, len(b))
        b[f"{m}_ci_lo"], b[f"{m}_ci_hi"] = b[f"{m}_mean"] - 0.1, b[f"{m}_mean"] + 0.1
    b.loc[b["system"] == "oracle", "dnsmos_ovrl_mean"] = np.nan  # not scored there: no point in that panel
    mix = b[b["system"] == "static"].assign(system="mixture", role="input", alpha=np.nan)
    b = pd.concat([mix, b], ignore_index=True)
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    assert "quality" in {p.stem for p in figures.draw_all(tmp_path)}
    pts = pd.read_csv(tmp_path / "figures" / "quality.csv")
    # every cell's pooled row once, and the mixture's (the dashed line); no pDNSMOS column (not scored)
    assert set(pts["condition"]) == {"all"} and len(pts) == len(b[b["condition"] == "all"]) == 7
    assert (pts["system"] == "mixture").sum() == 1 and not any(c.startswith("pdnsmos") for c in pts)
    _traced(pts, b, ["pesq_mean", "pesq_ci_lo", "stoi_mean", "stoi_ci_hi", "dnsmos_ovrl_mean"])
    # a grid that scores SI-SDR only has no quality figure, and says why
    b.drop(columns=[c for c in b if c.startswith(("pesq", "stoi", "dnsmos"))]).to_csv(
        tmp_path / "leaderboard.csv", index=False)
    with pytest.raises(figures.Skip, match="PESQ, STOI or DNSMOS"):
        figures.quality(figures.read_board(tmp_path), tmp_path / "q")
    assert "quality" not in {p.stem for p in figures.draw_all(tmp_path)}
    assert not (tmp_path / "figures" / "quality.png").exists()  # the earlier drawing is removed


def test_teachers_figure_plots_each_teachers_static_and_its_refiners_gain_against_eer_and_macs(tmp_path):
    one = _board()
    one.assign(teacher="ge2e", teacher_eer=0.08).to_csv(tmp_path / "leaderboard.csv", index=False)
    assert "teachers" not in {p.stem for p in figures.draw_all(tmp_path)}  # one teacher: nothing to compare
    parts = []
    for t, eer, macs, shift in (("ge2e", 0.08, 2.5e7, 0.0), ("ecapa", 0.12, 4e7, -1.0), ("vfl", 0.09, np.nan, 0.5)):
        b = one.copy()
        b["teacher"], b["teacher_eer"], b["teacher_macs_per_s"] = t, eer, macs
        b["si_sdri_mean"] += shift
        b["si_sdri_ci_lo"], b["si_sdri_ci_hi"] = b["si_sdri_mean"] - 0.3, b["si_sdri_mean"] + 0.3
        parts.append(b)
    b = pd.concat(parts, ignore_index=True)
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    assert "teachers" in {p.stem for p in figures.draw_all(tmp_path)}
    pts = pd.read_csv(tmp_path / "figures" / "teachers.csv")
    assert set(pts["condition"]) == {"all"}
    static = pts[pts["what"] == "static"]
    assert sorted(static["teacher"]) == ["ecapa", "ge2e", "vfl"] and (static["system"] == "static").all()
    # every refining cell of every teacher once, the baseline never among the gains
    gains = pts[pts["what"] == "gain"]
    assert len(gains) == 3 * 5 and not (gains["role"] == "baseline").any()
    _traced(pts, b, ["teacher_eer", "si_sdri_mean", "si_sdri_ci_lo", "d_si_sdr_mean", "d_si_sdr_ci_hi"])
    # the teacher whose MACs were not counted keeps its EER point, with NaN MACs in the points
    assert pts.loc[pts["teacher"] == "vfl", "teacher_macs_per_s"].isna().all()
    # legend labels do not carry the teacher (the x position says it)
    assert not pts["label"].str.contains("teacher=").any()


def test_sweep_figures_from_trials(tmp_path):
    rng = np.random.default_rng(0)
    trials = pd.DataFrame({"number": range(8), "value": rng.normal(size=8), "state": ["COMPLETE"] * 7 + ["FAIL"],
                           "params_refine.alpha": rng.uniform(0, 1, 8), "params_distill.tau": rng.uniform(0.01, 1, 8)})
    trials.loc[7, "value"] = np.nan
    trials.to_csv(tmp_path / "trials.csv", index=False)
    assert figures.main(["--run", str(tmp_path)]) == 0
    hist = pd.read_csv(tmp_path / "figures" / "sweep_history.csv")
    assert len(hist) == 7 and (hist["source"] == "trials").all()
    np.testing.assert_array_equal(hist["best_so_far"], np.maximum.accumulate(hist["value"]))
    m = pd.read_csv(tmp_path / "figures" / "sweep_map.csv").merge(trials, on="number", suffixes=("", "_t"))
    for c in ("value", "params_refine.alpha", "params_distill.tau"):
        np.testing.assert_array_equal(m[c], m[f"{c}_t"])
    assert (tmp_path / "figures" / "sweep_map.png").stat().st_size > 5000


def test_report_html_without_a_browser(tmp_path):
    from bench.report.html import write_html

    b = _board()
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    figures.draw_all(tmp_path)
    text = write_html(tmp_path).read_text()
    assert text.count("<tr data-i=") == len(b)
    assert text.count('src="data:image/png;base64,') == 4
    assert "http://" not in text and "https://" not in text and "<audio" not in text
    assert 'data-col="d_si_sdr_mean"' in text and '<select data-filter="condition">' in text


def _no_students() -> pd.DataFrame:
    """A leaderboard as ``bench.run`` writes it for a grid without students: the speaker columns
    are there, every student value NaN."""
    b = _board()
    b = b[~b["system"].str.startswith("student-")].copy()
    return b.assign(teacher="ge2e", teacher_eer=0.05, student_eer=np.nan, student_agreement=np.nan)


def test_a_grid_without_students_skips_their_figure_and_writes_both_reports(tmp_path, caplog):
    import logging

    _no_students().to_csv(tmp_path / "leaderboard.csv", index=False)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "speaker_verification.png").write_bytes(b"an earlier run's figure")
    with caplog.at_level(logging.INFO, logger="bench"):
        assert figures.main(["--run", str(tmp_path)]) == 0
    assert "figure speaker_verification skipped: the grid has no students" in caplog.text
    assert not (tmp_path / "figures" / "speaker_verification.png").exists()  # never shown for other data
    assert {p.stem for p in (tmp_path / "figures").glob("*.png")} == {"gain_vs_rate", "headroom", "complexity",
                                                                      "conditions"}
    assert (tmp_path / "REPORT.md").is_file() and (tmp_path / "report.html").is_file()


def test_a_board_of_mixture_rows_only_draws_nothing_and_says_why(tmp_path, caplog):
    import logging

    b = _board()
    b = b[b["system"] == "static"].assign(system="mixture", role="input", alpha=np.nan, d_si_sdr_mean=np.nan,
                                          d_si_sdr_ci_lo=np.nan, d_si_sdr_ci_hi=np.nan, total_macs_per_s=np.nan)
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    with caplog.at_level(logging.INFO, logger="bench"):
        paths = figures.draw_all(tmp_path)
    assert [p.stem for p in paths] == ["conditions"]
    for name in ("gain_vs_rate", "headroom", "complexity", "speaker_verification", "spectrogram"):
        assert f"figure {name} skipped: " in caplog.text
    assert "failed" not in caplog.text


def test_the_redraw_hint_names_the_folder_the_user_has(tmp_path, caplog, monkeypatch):
    import logging

    from bench.report import html as report_html

    _board().to_csv(tmp_path / "leaderboard.csv", index=False)
    monkeypatch.setattr(report_html, "write_html", lambda run_dir: (_ for _ in ()).throw(OSError("disk full")))
    with caplog.at_level(logging.WARNING, logger="bench"):
        assert not figures.draw_report(tmp_path, shown_as=tmp_path / "results" / "smoke")
    assert f"report.html failed (OSError: disk full); redraw with python -m bench.figures --run " \
           f"{tmp_path / 'results' / 'smoke'}" in caplog.text
    assert (tmp_path / "REPORT.md").is_file()  # the other parts are still written


def test_a_run_draws_its_reports_naming_the_folder_the_results_end_up_in(tmp_path, monkeypatch):
    from bench import grid, report

    seen = {}
    monkeypatch.setattr(report, "leaderboard", lambda per, cells, n_boot, seed: _board())
    monkeypatch.setattr(figures, "draw_report", lambda run_dir, shown_as=None: seen.update(run=run_dir, shown=shown_as))
    work = tmp_path / ".losses.partial"
    work.mkdir()
    common = {"date": "today", "git_commit": "abc", "device": "cpu", "versions": "torch"}
    grid.write_board(work, "losses", [pd.DataFrame({"x": [1]})], [], 10, common, None, figures=True,
                     shown_as=tmp_path / "losses")
    assert seen == {"run": work, "shown": tmp_path / "losses"}
    assert (work / "leaderboard.csv").is_file()
