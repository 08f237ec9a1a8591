"""per_utterance.csv leaves out the columns of metrics no cell scored, and only those."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.grid import unscored_dropped, write_tables


def _per() -> pd.DataFrame:
    nan = np.nan
    return pd.DataFrame({
        "cell_id": ["a", "a", "b"],
        "si_sdr": [1.0, 2.0, 3.0], "si_sdr_failed": [False, False, False],
        "pesq": [nan, nan, nan], "pesq_failed": [False, False, False],  # not scored: dropped
        "stoi": [0.9, nan, nan], "stoi_failed": [False, False, False],  # a subset: kept
        "estoi": [nan, nan, nan], "estoi_failed": [False, True, False],  # scored and failed: kept
        "out_cos": [nan, nan, nan],  # no flag: not a metric column of the writer's kind, kept
    })


def test_only_metrics_no_cell_scored_are_left_out():
    got = unscored_dropped(_per())
    assert list(got.columns) == ["cell_id", "si_sdr", "si_sdr_failed", "stoi", "stoi_failed", "estoi",
                                 "estoi_failed", "out_cos"]
    pd.testing.assert_frame_equal(got, _per().drop(columns=["pesq", "pesq_failed"]))


def test_the_run_folder_gets_the_trimmed_table(tmp_path):
    per = _per()
    write_tables(tmp_path, [per.iloc[:2], per.iloc[2:]], [{"cell_id": "a"}, {"cell_id": "b"}], [])
    back = pd.read_csv(tmp_path / "per_utterance.csv")
    assert "pesq" not in back and "pesq_failed" not in back
    np.testing.assert_array_equal(back["si_sdr"].to_numpy(), per["si_sdr"].to_numpy())
    assert back["estoi_failed"].tolist() == [False, True, False]
