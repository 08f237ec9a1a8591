from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.report import bootstrap_mean, bootstrap_ratio, leaderboard, summary_table


def _rows(cell_id: str, si_sdr: np.ndarray, cond: str = "clean") -> pd.DataFrame:
    n = len(si_sdr)
    return pd.DataFrame({
        "cell_id": cell_id, "condition": cond, "utt": range(n), "speaker": "s",
        "si_sdr": si_sdr, "si_sdri": si_sdr - 1.0, "pesq": np.full(n, 2.0), "stoi": np.full(n, 0.8),
        "estoi": np.full(n, 0.6), "spk_cos": np.full(n, 0.7),
        "si_sdr_failed": False, "si_sdri_failed": False, "pesq_failed": False, "stoi_failed": False,
        "estoi_failed": False,
    })


def test_bootstrap_ci_contains_mean_and_is_seeded():
    x = np.random.default_rng(0).normal(3.0, 1.0, 200)
    m, lo, hi = bootstrap_mean(x, 500, seed=1)
    assert lo < m < hi and abs(m - x.mean()) < 1e-12
    assert bootstrap_mean(x, 500, seed=1) == (m, lo, hi)
    assert np.isnan(bootstrap_mean(np.array([np.nan]))[0])


def test_bootstrap_ratio_exact_when_proportional():
    den = np.array([1.0, 2.0, 3.0, 4.0])
    r, lo, hi = bootstrap_ratio(0.5 * den, den, 200)
    assert r == 0.5 and abs(lo - 0.5) < 1e-12 and abs(hi - 0.5) < 1e-12


def test_leaderboard_deltas_headroom_and_failures():
    rng = np.random.default_rng(0)
    base = rng.normal(5.0, 1.0, 30)
    static = _rows("st", base)
    oracle = _rows("or", base + 2.0)
    student = _rows("stu", base + 1.0)
    student.loc[3, "pesq"] = np.nan
    student.loc[3, "pesq_failed"] = True
    per_utt = pd.concat([static, oracle, student], ignore_index=True)
    cells = pd.DataFrame([
        {"cell_id": "st", "system": "static", "static_id": "st", "upper_id": "or", "loss": "", "alpha": 0.0},
        {"cell_id": "or", "system": "oracle", "static_id": "st", "upper_id": "or", "loss": "", "alpha": 0.5},
        {"cell_id": "stu", "system": "student-mse", "static_id": "st", "upper_id": "or", "loss": "mse", "alpha": 0.5},
    ])
    board = leaderboard(per_utt, cells, n_boot=200)
    assert set(board["condition"]) == {"clean", "all"}
    row = board[(board["cell_id"] == "stu") & (board["condition"] == "clean")].iloc[0]
    assert abs(row["d_si_sdr_mean"] - 1.0) < 1e-9
    assert abs(row["headroom_si_sdr_mean"] - 2.0) < 1e-9
    assert abs(row["recovered_frac"] - 0.5) < 1e-9
    assert row["pesq_failures"] == 1 and row["n"] == 30
    assert np.isfinite(row["pesq_mean"])  # NaN ignored, not propagated
    st = board[(board["cell_id"] == "st") & (board["condition"] == "clean")].iloc[0]
    assert not np.isfinite(st["d_si_sdr_mean"])  # static has no gain over itself (the column exists: NaN)
    text = summary_table(board)
    assert "student-mse" in text and "static" in text


def test_recovered_fraction_needs_measurable_headroom():
    rng = np.random.default_rng(1)
    base = rng.normal(5.0, 1.0, 40)
    noise = rng.normal(0.0, 1.0, 40)
    noise -= noise.mean()  # headroom with mean exactly 0: its CI straddles 0
    per_utt = pd.concat([_rows("st", base), _rows("or", base + noise), _rows("stu", base + 0.3)], ignore_index=True)
    cells = pd.DataFrame([
        {"cell_id": "st", "system": "static", "static_id": "st", "upper_id": "or", "loss": "", "alpha": 0.0},
        {"cell_id": "or", "system": "oracle_clean", "static_id": "st", "upper_id": "or", "loss": "", "alpha": 0.0},
        {"cell_id": "stu", "system": "student-mse", "static_id": "st", "upper_id": "or", "loss": "mse", "alpha": 0.5},
    ])
    row = leaderboard(per_utt, cells, n_boot=200).query("cell_id == 'stu' and condition == 'clean'").iloc[0]
    assert row["headroom_si_sdr_ci_lo"] < 0 < row["headroom_si_sdr_ci_hi"]
    assert abs(row["d_si_sdr_mean"] - 0.3) < 1e-9  # the gain itself is still reported
    # the column is there (a stable schema) and NaN: a fraction of a headroom within noise
    assert "recovered_frac" in row.index and np.isnan(row["recovered_frac"])
    assert np.isnan(row["recovered_ci_lo"]) and np.isnan(row["recovered_ci_hi"])


def test_git_commit_marks_code_changes_dirty_but_not_results(tmp_path):
    import subprocess

    from bench.report import git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "leaderboard.csv").write_text("a\n1\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = git_commit(tmp_path)
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (tmp_path / "results" / "leaderboard.csv").write_text("a\n2\n")  # a run rewrote its output
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == clean + "-dirty"
    assert git_commit(tmp_path / "nowhere") == "unknown"


def test_summary_shows_config_axes_only_when_they_vary():
    base = {"condition": "all", "system": "student-mse", "loss": "mse", "alpha": 0.1, "seed": 0,
            "si_sdr_mean": 1.0, "block_s": 0.5, "gate": "agreement"}
    board = pd.DataFrame([{**base, "gate_threshold": 0.2}, {**base, "gate_threshold": 0.6},
                          {**base, "system": "static", "loss": "", "gate": "", "gate_threshold": float("nan")}])
    header = summary_table(board).splitlines()[0].split()
    assert "thr" in header and "block" not in header  # threshold varies, block length does not
    assert header.index("seed") < header.index("gate") < header.index("SI-SDR")
    assert "thr" not in summary_table(board.iloc[:1]).splitlines()[0]


def test_leaderboard_reports_the_gates_skipped_share():
    per = pd.DataFrame({"cell_id": ["g"] * 4, "condition": ["a", "a", "b", "b"], "utt": [0, 1, 0, 1],
                        "si_sdr": [1.0, 2.0, 3.0, 4.0], "skipped_frac": [0.0, 0.5, 1.0, 1.0]})
    cells = pd.DataFrame({"cell_id": ["g"], "system": ["student-mse"], "static_id": [""], "upper_id": [""]})
    board = leaderboard(per, cells, n_boot=50).set_index("condition")
    assert board.loc["a", "skipped_frac"] == 0.25 and board.loc["b", "skipped_frac"] == 1.0
    assert board.loc["all", "skipped_frac"] == 0.625


def test_leaderboard_gain_over_shrink_holm_and_seed_spread():
    rng = np.random.default_rng(3)
    base = rng.normal(5.0, 1.0, 30)
    rows = [_rows("st", base), _rows("sh", base + 0.2), _rows("up", base + 1.5),
            _rows("s0", base + 0.5 + rng.normal(0, 0.1, 30)), _rows("s1", base + 0.7 + rng.normal(0, 0.1, 30))]
    per_utt = pd.concat(rows, ignore_index=True)
    link = {"static_id": "st", "control_id": "sh", "upper_id": "up", "clean_id": ""}
    cells = pd.DataFrame([
        {"cell_id": "st", "system": "static", "static_id": "st", "control_id": "", "upper_id": "", "clean_id": "",
         "alpha": 0.0, "seed": ""},
        {"cell_id": "sh", "system": "shrink", **link, "alpha": 0.3, "seed": ""},
        {"cell_id": "up", "system": "oracle_target", **link, "alpha": 0.3, "seed": ""},
        {"cell_id": "s0", "system": "student-mse", **link, "alpha": 0.3, "seed": 0},
        {"cell_id": "s1", "system": "student-mse", **link, "alpha": 0.3, "seed": 1},
    ])
    board = leaderboard(per_utt, cells, n_boot=200).set_index(["cell_id", "condition"])
    s0 = board.loc[("s0", "clean")]
    assert s0["ds_si_sdr_mean"] == pytest.approx(0.3, abs=0.05)  # gain over shrink, paired
    assert s0["ds_si_sdr_ci_lo"] > 0
    assert s0["headroom_si_sdr_mean"] == pytest.approx(1.5)
    assert s0["p_d_si_sdr"] < 1e-3 and s0["p_d_si_sdr_holm"] >= s0["p_d_si_sdr"]
    # the spread between the two training seeds of the same system
    assert s0["n_seeds"] == 2 and s0["d_si_sdr_seed_sd"] == pytest.approx(np.std(
        [board.loc[("s0", "clean"), "d_si_sdr_mean"], board.loc[("s1", "clean"), "d_si_sdr_mean"]], ddof=1))
    assert np.isnan(board.loc[("sh", "clean"), "d_si_sdr_seed_sd"])
    assert np.isnan(board.loc[("s0", "all"), "p_d_si_sdr"])  # the pooled row repeats mixtures: no test
