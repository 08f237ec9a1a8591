import json

import numpy as np
import pandas as pd
import pytest

from bench.breakdown import _bin, _run_args, breakdown_table, groups, main, mixture_kind


def test_mixture_kind_names_what_the_mixture_adds():
    assert mixture_kind({"sir_db": 3.0, "snr_db": 10.0}) == "both"
    assert mixture_kind({"sir_db": 3.0, "snr_db": None}) == "talker only"
    assert mixture_kind({"snr_db": 0.0}) == "noise only"
    assert mixture_kind({}) == "neither"


def test_bins_are_half_open_with_the_top_edge_inside_and_missing_levels_named():
    edges = [0.0, 5.0, 10.0]
    assert _bin(0.0, edges, "sir_db") == "0..5 dB"
    assert _bin(4.99, edges, "sir_db") == "0..5 dB"
    assert _bin(5.0, edges, "sir_db") == "5..10 dB"
    assert _bin(10.0, edges, "sir_db") == "5..10 dB"
    assert _bin(10.5, edges, "sir_db") == "outside"
    assert _bin(-0.1, edges, "snr_db") == "outside"
    assert _bin(None, edges, "sir_db") == "no SIR"
    assert _bin(None, edges, "snr_db") == "no SNR"


def test_groups_refuses_an_unknown_grouping_and_too_few_edges():
    metas = {"clean": [{"sir_db": 1.0}]}
    with pytest.raises(ValueError, match="--by 'speaker' is not one of kind, sir_db, snr_db"):
        groups(metas, "speaker", [0, 5])
    with pytest.raises(ValueError, match="at least two edges"):
        groups(metas, "sir_db", [5])
    g = groups(metas, "sir_db", [0, 5])
    assert g.to_dict("records") == [{"condition": "clean", "utt": 0, "group": "0..5 dB"}]


def _run_frames(n: int = 12) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[dict]]]:
    """Two conditions of ``n`` mixtures; A beats B by 1 dB on talker-only mixtures and ties on
    noise-only ones (small alternating noise so the CIs are finite)."""
    rng = np.random.default_rng(0)
    metas = {c: [{"sir_db": 5.0, "snr_db": None} if i % 2 else {"sir_db": None, "snr_db": 5.0} for i in range(n)]
             for c in ("clean", "competing")}
    rows = []
    for cond, ms in metas.items():
        for i, m in enumerate(ms):
            base = float(rng.normal(5.0, 2.0))
            gain = 1.0 if m["sir_db"] is not None else 0.0
            jitter = 0.05 * (-1) ** (i // 2)
            rows.append({"cell_id": "a", "condition": cond, "utt": i, "si_sdr": base + gain + jitter})
            rows.append({"cell_id": "b", "condition": cond, "utt": i, "si_sdr": base})
    cells = pd.DataFrame({"cell_id": ["a", "b"], "system": ["static", "nonpersonalized"]})
    return pd.DataFrame(rows), cells, metas


def test_breakdown_table_separates_the_groups_and_bolds_only_a_ci_that_excludes_zero():
    per, cells, metas = _run_frames()
    lines = breakdown_table(per, cells, ("static", "nonpersonalized"), groups(metas, "kind", []), n_boot=400).splitlines()
    assert lines[0] == "| static - nonpersonalized, si_sdr (dB), by kind | clean | competing | all |"
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in lines[2:]}
    assert list(rows) == ["noise only", "talker only"]  # the fixed order, absent kinds left out
    assert "**+1.00 [" in rows["talker only"] and rows["talker only"].endswith("(n 12) |")
    assert "(n 6)" in rows["talker only"]
    assert "**" not in rows["noise only"]


def test_breakdown_table_names_a_missing_metric_and_pair():
    per, cells, metas = _run_frames()
    g = groups(metas, "kind", [])
    with pytest.raises(ValueError, match="metric 'pesq' is not a column"):
        breakdown_table(per, cells, ("static", "nonpersonalized"), g, metric="pesq")
    with pytest.raises(ValueError, match="names 0 cells"):
        breakdown_table(per, cells, ("oracle", "nonpersonalized"), g)


def test_run_args_reads_the_grid_and_overrides_back(tmp_path):
    (tmp_path / "provenance.json").write_text(json.dumps(
        {"argv": ["--grid", "ablations/x.yaml", "--set", "eval.split=all", "--out", "o"]}))
    assert _run_args(tmp_path) == ("ablations/x.yaml", ["eval.split=all"])
    (tmp_path / "provenance.json").write_text(json.dumps({"argv": []}))
    with pytest.raises(ValueError, match="names no grid file"):
        _run_args(tmp_path)


def test_main_is_one_line_and_exit_2_on_a_missing_run_or_bad_bins(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "missing"), "--pair", "static", "nonpersonalized"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["--run", str(tmp_path), "--pair", "a", "b", "--by", "sir_db", "--bins", "0,x"]) == 2
    assert "--bins '0,x'" in capsys.readouterr().err


def test_a_single_difference_prints_its_mean_alone_and_a_clear_gain_is_bold():
    from bench.tables import paired_cell

    text, lo, hi = paired_cell(np.array([0.5]), None, 2)
    assert text == "+0.50" and np.isnan(lo) and np.isnan(hi)
    text, lo, _ = paired_cell(np.linspace(0.9, 1.1, 20), None, 2, n_boot=200)
    assert text.startswith("**+1.00 [") and lo > 0
    text, _, _ = paired_cell(np.linspace(-1.0, 1.0, 21), np.arange(21), 2, n_boot=200)
    assert not text.startswith("**")
