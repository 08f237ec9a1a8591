from pathlib import Path

import pandas as pd
import pytest

from bench.tables import cost_table, gain_table, main


def _board() -> pd.DataFrame:
    rows = []
    for cell, system, role, steps in (("s", "static", "baseline", None), ("a", "student-mse", "system", 200),
                                      ("b", "student-mse", "system", 1000)):
        for cond, d in (("competing", 0.5), ("all", -0.2)):
            rows.append({"cell_id": cell, "system": system, "role": role, "condition": cond, "distill_steps": steps,
                         "alpha": 0.1, "d_si_sdr_mean": d, "d_si_sdr_ci_lo": d - 0.3, "d_si_sdr_ci_hi": d + 0.3,
                         "p_d_si_sdr_holm": 0.01 if d > 0 else 0.5, "ds_si_sdr_mean": 1.0,
                         "ds_si_sdr_ci_lo": 0.5, "ds_si_sdr_ci_hi": 1.5, "p_ds_si_sdr_holm": 0.2})
    return pd.DataFrame(rows)


def test_one_row_per_refining_cell_and_comparison_bold_where_the_ci_is_above_zero():
    lines = gain_table(_board()).splitlines()
    assert lines[0] == "| si_sdr gain (dB) | competing | all |"
    body = lines[2:]
    assert len(body) == 4  # two student cells x (static, shrink); static itself has no row
    assert body[0] == "| student-mse, steps 200 - static | **+0.50 [0.20, 0.80]**\\* | -0.20 [-0.50, 0.10] |"
    assert body[1].startswith("| student-mse, steps 200 - shrink | **+1.00 [0.50, 1.50]** |")
    assert body[2].startswith("| student-mse, steps 1000 - static |")


def test_bad_metric_or_system_is_one_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="no d_pesq_mean column"):
        gain_table(_board(), "pesq")
    _board().to_csv(tmp_path / "leaderboard.csv", index=False)
    assert main(["--run", str(tmp_path), "--systems", "student-x"]) == 2
    assert "no refining cell of system student-x; systems: student-mse" in capsys.readouterr().err
    assert main(["--run", str(tmp_path / "missing")]) == 2


def test_student_space_rows_add_the_comparison_with_the_teacher_spaces_static():
    board = _board()
    extra = []
    for cell, system, role in (("t", "static@student-space-mse", "baseline"), ("u", "student@student-space-mse", "system")):
        for cond in ("competing", "all"):
            row = {"cell_id": cell, "system": system, "role": role, "condition": cond, "alpha": 0.1, "distill_steps": 1000,
                   "dt_si_sdr_mean": -0.4, "dt_si_sdr_ci_lo": -0.7, "dt_si_sdr_ci_hi": -0.1, "p_dt_si_sdr_holm": 0.01}
            if role == "system":
                row.update({"d_si_sdr_mean": 0.1, "d_si_sdr_ci_lo": -0.1, "d_si_sdr_ci_hi": 0.3})
            extra.append(row)
    body = gain_table(pd.concat([board, pd.DataFrame(extra)], ignore_index=True)).splitlines()[2:]
    assert "| static@student-space-mse, steps 1000 - teacher-space static | -0.40 [-0.70, -0.10]\\* | -0.40 [-0.70, -0.10]\\* |" in body
    assert any(b.startswith("| student@student-space-mse, steps 1000 - static |") for b in body)
    assert any(b.startswith("| student@student-space-mse, steps 1000 - teacher-space static |") for b in body)
    assert not any(b.startswith("| static@student-space-mse, steps 1000 - static") for b in body)  # nothing to show: no row
    assert len(body) == 4 + 3


def test_readme_tables_are_the_generated_ones():
    """Every table between bench.tables markers in the README, docs and results READMEs is what
    its arguments generate from the committed run (no hand-copied numbers)."""
    from bench.tables import update

    root = Path(__file__).resolve().parents[1]
    files = [root / "README.md", root / "docs" / "results.md", *sorted((root / "results").glob("*/README.md"))]
    n_blocks = 0
    for f in files:
        text = f.read_text()
        n_blocks += text.count("<!-- bench.tables ")
        new, changed = update(text, root)
        assert not changed, f"{f.name}: run `make tables` (stale: {changed})"
        assert new == text
    assert n_blocks >= 5


def test_a_hand_edited_table_is_caught(tmp_path):
    from bench.tables import main

    root = Path(__file__).resolve().parents[1]
    md = tmp_path / "x.md"
    md.write_text(f"<!-- bench.tables --run {root}/results/teachers_confirm --pair static,teacher=vfl "
                  "static,teacher=ge2e -->\n| made up |\n<!-- /bench.tables -->\n")
    assert main(["--update", str(md), "--check"]) == 1
    assert "made up" in md.read_text()  # --check changes nothing
    assert main(["--update", str(md)]) == 0
    text = md.read_text()
    assert "made up" not in text and "-0.39 [-0.64, -0.13]" in text
    assert main(["--update", str(md), "--check"]) == 0


def test_several_pairs_share_one_table_and_their_pooled_p_is_holm_corrected_over_them(tmp_path, capsys):
    import numpy as np

    from bench.tables import paired_table

    rng = np.random.default_rng(0)
    cells = pd.DataFrame({"cell_id": ["a", "b", "c"], "system": ["static"] * 3, "teacher": ["x", "y", "ref"]})
    shift = {"a": 1.0, "b": 0.05, "c": 0.0}
    rows = []
    for cond in ("competing", "combined"):  # two short conditions: one mixture scored twice
        for utt in range(30):
            base = rng.normal()
            for cell, s in shift.items():
                rows.append({"cell_id": cell, "condition": cond, "utt": utt, "si_sdr": base + s + 0.3 * rng.normal()})
    per = pd.DataFrame(rows)
    one = paired_table(per, cells, [("static,teacher=x", "static,teacher=ref")])
    assert "Holm" not in one and len(one.splitlines()) == 3  # one pair: the table of before
    pairs = [("static,teacher=x", "static,teacher=ref"), ("static,teacher=y", "static,teacher=ref")]
    lines = paired_table(per, cells, pairs).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| static,teacher=x - static,teacher=ref |")
    from bench.metrics.stats import sign_flip_p

    raw = []
    for cell in ("a", "b"):  # one unit per mixture: its two rows flipped together (30 sums, not 60 rows)
        d = per[per.cell_id == cell].si_sdr.to_numpy() - per[per.cell_id == "c"].si_sdr.to_numpy()
        sums = pd.Series(d).groupby(per[per.cell_id == cell].utt.to_numpy()).sum().to_numpy()
        assert sums.size == 30
        raw.append(sign_flip_p(sums))
    assert raw[0] < 0.01 < raw[1]  # the large shift is found, the small one not
    want = [min(1.0, 2 * min(raw)), max(min(1.0, 2 * min(raw)), min(1.0, max(raw)))]
    order = np.argsort(raw)
    holm = np.empty(2)
    holm[order] = want
    for line, p in zip(lines[2:], holm, strict=True):
        assert line.endswith(f"(p Holm {p:.2g}) |"), (line, p)
    per.to_csv(tmp_path / "per_utterance.csv", index=False)
    cells.to_csv(tmp_path / "cells.csv", index=False)
    _board().to_csv(tmp_path / "leaderboard.csv", index=False)
    assert main(["--run", str(tmp_path), "--pair", *pairs[0], "--pair", *pairs[1]]) == 0
    assert capsys.readouterr().out.strip() == "\n".join(lines)  # the command line gives the same table


def test_the_cost_table_puts_each_refiners_pooled_gains_beside_what_it_runs(tmp_path, capsys):
    b = _board()
    b["reading"], b["pse_params"], b["teacher_params"], b["total_macs_per_s"] = "teacher", 398635, 1423616, 8.06e7
    b["student_params"], b["extra_macs_per_s"] = 126177, 2.4e7
    oracle = b[b["cell_id"] == "a"].assign(cell_id="o", system="oracle", student_params=0, extra_macs_per_s=8.7e8,
                                           total_macs_per_s=9.26e8)
    space = b[b["cell_id"] == "a"].assign(cell_id="u", system="student@student-space-mse", reading="student",
                                          teacher_params=126177, dt_si_sdr_mean=-0.8, dt_si_sdr_ci_lo=-1.2,
                                          dt_si_sdr_ci_hi=-0.4)
    b = pd.concat([b, oracle, space], ignore_index=True)
    lines = cost_table(b).splitlines()
    assert len(lines) == 2 + 4  # the pooled row of each refining cell; static is no refiner
    rows = {r.split(" | ")[0].lstrip("| "): r.split(" | ") for r in lines[2:]}
    mse = rows["student-mse, steps 200"]
    assert mse[1:5] == ["teacher", "-0.20 [-0.50, 0.10]", "**+1.00 [0.50, 1.50]**", ""]
    assert mse[5:8] == ["399 k", "1.42 M", "126 k"] and mse[8].startswith("80.6 M")
    assert rows["oracle"][7] == "1.42 M (teacher)" and rows["oracle"][8].startswith("926 M")
    space_row = rows["student@student-space-mse"]
    assert space_row[1] == "student" and space_row[4] == "-0.80 [-1.20, -0.40]" and space_row[6:8] == [
        "126 k", "(the same)"]
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    assert main(["--run", str(tmp_path), "--cost", "--systems", "oracle"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[2].startswith("| oracle | teacher |")
    assert main(["--run", str(tmp_path), "--cost", "--systems", "nope"]) == 2


def test_stoi_gains_have_three_decimals_and_no_db_unit():
    """A STOI gain of a few thousandths must not print as +0.00, nor as decibels."""
    board = _board().rename(columns=lambda c: c.replace("si_sdr", "stoi"))
    for col in ("d_stoi_mean", "d_stoi_ci_lo", "d_stoi_ci_hi"):
        board[col] = board[col] / 100
    lines = gain_table(board, "stoi").splitlines()
    assert lines[0] == "| stoi gain | competing | all |"
    assert lines[2] == "| student-mse, steps 200 - static | **+0.005 [0.002, 0.008]**\\* | -0.002 [-0.005, 0.001] |"
    assert gain_table(_board()).splitlines()[0].endswith("gain (dB) | competing | all |")


def test_a_higher_confidence_level_widens_every_ci_and_says_so(tmp_path, capsys):
    import re

    import numpy as np

    from bench.tables import paired_table

    rng = np.random.default_rng(1)
    cells = pd.DataFrame({"cell_id": ["a", "b"], "system": ["static", "mixture"]})
    rows = []
    for cond in ("clean", "combined"):
        for utt in range(40):
            base = rng.normal()
            rows.append({"cell_id": "b", "condition": cond, "utt": utt, "si_sdr": base})
            rows.append({"cell_id": "a", "condition": cond, "utt": utt, "si_sdr": base + 0.3 + rng.normal()})
    per = pd.DataFrame(rows)

    def cis(table: str) -> list[tuple[float, float]]:
        return [(float(lo), float(hi)) for lo, hi in re.findall(r"\[(-?[\d.]+), (-?[\d.]+)\]", table.splitlines()[2])]

    t95, t99 = (paired_table(per, cells, [("static", "mixture")], level=lv) for lv in (0.95, 0.999))
    assert t95.splitlines()[0] == "| si_sdr (dB) | clean | combined | all |"
    assert t99.splitlines()[0] == "| si_sdr (dB), 99.9 % CI | clean | combined | all |"
    for (lo95, hi95), (lo99, hi99) in zip(cis(t95), cis(t99), strict=True):
        assert lo99 < lo95 and hi99 > hi95
    with pytest.raises(ValueError, match=r"--level 1.5: give a confidence level in \[0.5, 1\)"):
        paired_table(per, cells, [("static", "mixture")], level=1.5)
    _board().to_csv(tmp_path / "leaderboard.csv", index=False)
    assert main(["--run", str(tmp_path), "--level", "0.99"]) == 2
    assert "--level applies to --pair tables only" in capsys.readouterr().err
