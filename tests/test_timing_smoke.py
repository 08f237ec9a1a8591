"""End to end on the smoke grid: the leaderboard's timing columns, and a streaming-student cell."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SMOKE = str(Path(__file__).resolve().parents[1] / "ablations" / "smoke.yaml")


@pytest.fixture(scope="module")
def smoke(smoke_run):
    """The session's smoke run (tests/conftest.py)."""
    return smoke_run


def test_timing_columns_mean_what_their_names_say(smoke):
    code, out, _, _ = smoke
    assert code == 0
    cells = pd.read_csv(out / "cells.csv")
    cells = cells[cells["system"] != "mixture"]
    assert len(cells) and cells["rtf"].gt(0).all() and cells["batch_rtf"].gt(0).all()
    assert (cells["block_ms_p50"] <= cells["block_ms_p95"]).all() and cells["block_ms_p50"].gt(0).all()
    # the smoke backbone (pdfnet2/tiny) has hop 160 and latency n_fft - hop = 160: 0.5 s blocks
    assert np.allclose(cells["algo_latency_ms"], 1e3 * (8000 + 160) / 16000)
    # a stream's wall time is at least its blocks' compute: rtf >= median block time / block
    assert (cells["rtf"] >= 0.5 * cells["block_ms_p50"] / 500.0).all()


def test_streaming_student_cell_costs_a_quarter_of_the_window_one(smoke):
    from bench.cache import Cache
    from bench.config import Grid
    from bench.pipeline import Pipeline

    _, _, cache, _ = smoke
    window = next(c.config for c in Grid.load(SMOKE).cells()
                  if c.config.refine.name == "ema" and c.config.distill.loss == "mse" and c.config.refine.alpha > 0)
    streaming = dataclasses.replace(window, refine=dataclasses.replace(window.refine, student_mode="streaming"))
    p = Pipeline(Cache(cache), progress=False)
    w, s = p.evaluate(window), p.evaluate(streaming)
    assert w.info["eval_key"] != s.info["eval_key"]
    # window: block + 1.5 s context per 0.5 s block = 4 passes; streaming: one pass
    assert 3.5 < w.info["extra_macs_per_s"] / s.info["extra_macs_per_s"] < 5.0
    assert s.info["student_macs_per_s"] == pytest.approx(s.info["extra_macs_per_s"])
    assert np.isfinite(s.rows["si_sdr"]).all() and s.rows["traj_cos"].notna().all()
    assert not np.allclose(s.rows["traj_cos"], w.rows["traj_cos"])  # another embedding trajectory
    assert s.info["n_updates"] == w.info["n_updates"]
