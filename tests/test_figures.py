from __future__ import annotations

import numpy as np
import pandas as pd

from bench import figures


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
    from bench.report_md import write_report

    _board().to_csv(tmp_path / "leaderboard.csv", index=False)
    figures.draw_all(tmp_path)
    text = write_report(tmp_path).read_text()
    for name in ("gain_vs_rate", "headroom", "complexity", "conditions"):
        assert f"figures/{name}.png" in text and (tmp_path / "figures" / f"{name}.png").is_file()
    assert "## Condition: competing" in text and "student-mse" in text and "vs shrink" in text
