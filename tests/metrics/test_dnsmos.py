"""DNSMOS P.835 / P.808 and pDNSMOS: the suite's values against ``speechmos``'s own ``run()``, the
challenge's windowing, NaN cases, and the metric selection (``eval.metrics``) in evaluations and keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
from speechmos import dnsmos as reference

from bench.config import ConfigError, ExperimentConfig, canonical_metrics, validate
from bench.metrics import dnsmos as d
from bench.metrics import quality as q
from bench.pipeline import eval_slice
from bench.pipeline.keys import mixture_key

SR = 16_000


def _signal(seconds: float, seed: int) -> np.ndarray:
    """Seeded speech-like clip: a gated harmonic tone at a random pitch in noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 250)
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    gate = (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > 0).astype(float)
    x = gate * tone + rng.uniform(0.02, 0.5) * rng.standard_normal(t.size)
    return (rng.uniform(0.1, 0.9) * x / np.abs(x).max()).astype(np.float32)


# 0.6 s is repeated to 9.6 s (one window), 9.5 s is one window, 11.2 s two
@pytest.mark.parametrize(("seconds", "seed"), [(0.6, 0), (9.5, 1), (11.2, 2), (9.5, 3)])
def test_matches_speechmos_run(seconds, seed):
    x = _signal(seconds, seed)
    ours = d.scores(x)
    plain = reference.run(x, SR)
    pers = reference.run(x, SR, model_type="dnsmos_personalized")
    want = {"dnsmos_sig": plain["sig_mos"], "dnsmos_bak": plain["bak_mos"], "dnsmos_ovrl": plain["ovrl_mos"],
            "dnsmos_p808": plain["p808_mos"], "pdnsmos_sig": pers["sig_mos"], "pdnsmos_bak": pers["bak_mos"],
            "pdnsmos_ovrl": pers["ovrl_mos"]}
    assert set(ours) == set(d.COLUMNS)
    for k, v in want.items():
        assert ours[k] == pytest.approx(float(v), abs=1e-6), k
    assert d.dnsmos(x) == {k: ours[k] for k in d.DNSMOS_COLUMNS}
    assert d.pdnsmos(x) == {k: ours[k] for k in d.PDNSMOS_COLUMNS}


def test_windows_follow_the_challenge():
    n = {s: len(d.windows(np.ones(int(s * SR), np.float32))) for s in (0.6, 4.0, 9.5, 11.2, 20.5)}
    # 4 s -> 16 s (7 windows); from window 7 on the float bounds lose a sample and the window is skipped
    assert n == {0.6: 1, 4.0: 7, 9.5: 1, 11.2: 2, 20.5: 7}
    assert all(len(w) == int(d.INPUT_LENGTH * SR) for w in d.windows(np.ones(4 * SR, np.float32)))


def test_out_of_range_is_clipped():
    x = _signal(9.5, 4) * 3.0
    with pytest.raises(ValueError):
        reference.run(x, SR)
    ours = d.dnsmos(x)
    want = reference.run(np.clip(x, -1.0, 1.0), SR)
    assert ours["dnsmos_ovrl"] == pytest.approx(float(want["ovrl_mos"]), abs=1e-4)


@pytest.mark.parametrize("bad", [np.zeros(0, np.float32), np.zeros(SR, np.float32),
                                 np.array([0.1, np.nan] * SR, np.float32), np.ones((2, SR), np.float32)])
def test_nan_when_not_computable(bad):
    assert all(math.isnan(v) for v in d.scores(bad).values())


def test_nan_at_another_rate_and_on_runtime_failure(monkeypatch):
    x = _signal(9.5, 5)
    assert all(math.isnan(v) for v in d.scores(x, sr=8000).values())

    def broken(model):
        raise RuntimeError("no session")

    monkeypatch.setattr(d, "_session", broken)
    assert all(math.isnan(v) for v in d.scores(x).values())


def test_evaluate_utterances_adds_columns_and_counts_failures():
    x = _signal(9.5, 6)
    items = [(x, x, x), (np.zeros_like(x), x, x)]
    df = q.evaluate_utterances(items, workers=1, pesq=False, stoi=False, estoi=False, dnsmos=True, pdnsmos=True)
    for c in d.COLUMNS:
        assert df[f"{c}_failed"].tolist() == [False, True]
    assert df["dnsmos_ovrl"].iloc[0] == pytest.approx(d.scores(x)["dnsmos_ovrl"])
    assert df["stoi"].isna().all() and not df["stoi_failed"].any()  # not computed, not failed
    pooled = q.evaluate_utterances(items, workers=2, pesq=False, stoi=False, estoi=False, dnsmos=True,
                                   mp_context="fork")
    assert "pdnsmos_ovrl" not in pooled
    assert pooled["dnsmos_ovrl"].iloc[0] == pytest.approx(df["dnsmos_ovrl"].iloc[0], abs=1e-6)
    plain = q.evaluate_utterances(items[:1], workers=1, pesq=False)
    assert list(plain.columns) == [*q.METRICS, *(f"{m}_failed" for m in q.METRICS)]  # as before


def test_metric_selection_config_and_keys():
    assert q.Selection.of(["si_sdr", "pesq", "stoi", "estoi"]) == q.Selection()
    assert q.Selection.of(["dnsmos"], pesq=True) == q.Selection(pesq=False, stoi=False, estoi=False, dnsmos=True)
    assert not q.Selection.of(["pesq"], pesq=False).pesq
    with pytest.raises(ValueError):
        q.Selection.of(["mosnet"])
    assert canonical_metrics(["estoi", "pesq", "stoi"]) == ["si_sdr", "pesq", "stoi", "estoi"]
    base = ExperimentConfig()
    same = ExperimentConfig.from_dict({"eval": {"metrics": ["stoi", "estoi", "pesq"]}})
    more = ExperimentConfig.from_dict({"eval": {"metrics": ["si_sdr", "pesq", "stoi", "estoi", "dnsmos"]}})
    only = ExperimentConfig.from_dict({"eval": {"metrics": ["si_sdr"]}})
    assert eval_slice(same) == eval_slice(base) and "metrics" not in eval_slice(base)["eval"]
    assert mixture_key(same, "c") == mixture_key(base, "c")
    assert eval_slice(more)["eval"]["metrics"] == ["si_sdr", "pesq", "stoi", "estoi", "dnsmos"]
    assert len({mixture_key(c, "c") for c in (base, more, only)}) == 3
    with pytest.raises(ConfigError, match="eval.metrics"):
        validate(ExperimentConfig.from_dict({"eval": {"metrics": ["pesq", "mosnet"]}}))


def test_perf_reports_each_metric_cost():
    from bench import perf

    items, _ = perf.metric_items(None, 1, 9.5)
    costs = perf.metric_costs(items, ("si_sdr", "pesq", "dnsmos"))
    assert costs["dnsmos_windows_each"] == 1 and costs["n"] == 1
    assert costs["dnsmos"]["cpu_s_per_item"] > costs["si_sdr"]["cpu_s_per_item"] >= 0
    table = perf.tables({"environment": {}, "metric_costs": [costs]})[-1]
    assert [r[0] for r in table[2]] == ["si_sdr", "pesq", "dnsmos"]


def test_cell_scores_dnsmos_of_outputs_and_leaderboard_columns():
    from types import SimpleNamespace

    import pandas as pd

    from bench.pipeline.cell import score
    from bench.report import leaderboard, summary_table

    x = _signal(9.5, 7)
    mixes = [SimpleNamespace(target=x, mixture=x + 0.1 * _signal(9.5, 8), meta=None, speaker="s")]
    cfg = ExperimentConfig.from_dict({"eval": {"metrics": ["si_sdr", "dnsmos"], "workers": 1}})
    rows = score(cfg, {"clean": mixes}, {"clean": [x]})
    assert rows["dnsmos_ovrl"].iloc[0] == pytest.approx(d.dnsmos(x)["dnsmos_ovrl"])
    assert rows["pesq"].isna().all() and not rows["pesq_failed"].any() and "pdnsmos_ovrl" not in rows

    rng = np.random.default_rng(0)
    n = 20
    base = rng.normal(2.5, 0.3, n)

    def cell(cid, ovrl):
        return pd.DataFrame({"cell_id": cid, "condition": "clean", "utt": range(n), "speaker": "s",
                             "si_sdr": base, "si_sdri": base, "dnsmos_ovrl": ovrl, "si_sdr_failed": False,
                             "dnsmos_ovrl_failed": ~np.isfinite(ovrl)})
    better = base + 0.4
    better[2] = np.nan
    per_utt = pd.concat([cell("st", base), cell("b", better)], ignore_index=True)
    cells = pd.DataFrame([{"cell_id": "st", "system": "static", "static_id": "st"},
                          {"cell_id": "b", "system": "other", "static_id": "st"}])
    board = leaderboard(per_utt, cells, n_boot=200)
    row = board[(board["cell_id"] == "b") & (board["condition"] == "clean")].iloc[0]
    assert row["dnsmos_ovrl_failures"] == 1
    assert row["dnsmos_ovrl_ci_lo"] < row["dnsmos_ovrl_mean"] < row["dnsmos_ovrl_ci_hi"]
    assert row["d_dnsmos_ovrl_mean"] == pytest.approx(0.4) and np.isfinite(row["p_d_dnsmos_ovrl_holm"])
    assert "DNSMOS OVRL" in summary_table(board)
