"""Conditions and metrics as plugins: each declares its nature, and a user's condition and metric
(one file each in examples/, no edit to bench/) run on the smoke grid like built-ins."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import registry
from bench.config import CONDITIONS, EVAL_METRICS, STREAM_CONDITIONS, ConfigError, ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pse_kd_example_plugins"
SMOKE = str(ROOT / "ablations" / "smoke.yaml")


@pytest.fixture
def user_plugins(monkeypatch):
    """The example package's condition and metric, registered for one test only."""
    for kind in ("condition", "metric"):
        registry.names(kind)  # the built-ins first
        monkeypatch.setitem(registry._REGISTRY, kind, dict(registry._REGISTRY[kind]))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for mod in ("pse_kd_example.conditions", "pse_kd_example.metrics"):
        sys.modules.pop(mod, None)
        importlib.import_module(mod)
    yield
    for mod in ("pse_kd_example.conditions", "pse_kd_example.metrics"):
        sys.modules.pop(mod, None)


def test_builtins_declare_their_nature():
    from bench.data.condition_spec import spec as cspec
    from bench.metrics.dnsmos import DNSMOS_COLUMNS
    from bench.metrics.spec import spec as mspec

    assert set(registry.names("condition")) >= set(CONDITIONS)
    for name in CONDITIONS:
        c = cspec(name)
        assert c.kind == ("stream" if name in STREAM_CONDITIONS else "enrollment") and c.changes and c.builtin
    assert cspec("competing").other_voice and not cspec("reverb").other_voice
    assert set(registry.names("metric")) >= set(EVAL_METRICS)
    assert mspec("si_sdr").cost == "fast" and mspec("pesq").cost == "slow"
    assert not mspec("dnsmos").needs_reference and mspec("dnsmos").columns == DNSMOS_COLUMNS
    assert all(mspec(m).higher_is_better for m in EVAL_METRICS)


def test_user_names_validate_and_enter_keys(user_plugins):
    from bench.pipeline.keys import EvalSetSpec, eval_slice

    cfg = ExperimentConfig.from_dict({"eval": {"conditions": ["clean", "clipped"], "metrics": ["si_sdr", "lsd"]}})
    assert eval_slice(cfg)["eval"]["metrics"] == ["si_sdr", "lsd"]
    assert eval_slice(cfg)["eval"]["metric_versions"] == {"lsd": "1"}
    # the condition's version is in its eval sets' key: a changed plugin never reuses old mixtures
    from bench.data.condition_spec import Condition, spec

    key = EvalSetSpec.of(cfg, "clipped").key("corpus")
    bumped = Condition("clipped", "enrollment", "x", degrade=spec("clipped").degrade, version="2")
    registry._REGISTRY["condition"]["clipped"] = bumped
    assert EvalSetSpec.of(cfg, "clipped").key("corpus") != key
    # the built-ins' keys have no plugin part (the cached eval sets keep their keys)
    assert EvalSetSpec.of(cfg, "clean").key("corpus") == EvalSetSpec.of(ExperimentConfig(), "clean").key("corpus")


def test_unknown_condition_and_metric_name_the_choices():
    with pytest.raises(ConfigError, match=r"eval.conditions\[1\]='clipped'.*choices: clean"):
        ExperimentConfig.from_dict({"eval": {"conditions": ["clean", "clipped"]}})
    with pytest.raises(ConfigError, match=r"eval.metrics\[0\]='lsd'.*choices: si_sdr"):
        ExperimentConfig.from_dict({"eval": {"metrics": ["lsd"]}})


def test_declarations_are_checked():
    from bench.data.condition_spec import Condition
    from bench.metrics.spec import Metric

    with pytest.raises(ValueError, match="kind='batch'"):
        Condition("x", "batch", "y")
    with pytest.raises(ValueError, match="only enrollment conditions"):
        Condition("x", "stream", "y", degrade=lambda e, r, c: (e, {}))
    with pytest.raises(ValueError, match="cost='cheap'"):
        Metric("x", cost="cheap")


def test_a_bad_user_condition_is_a_clear_error(monkeypatch):
    from bench.data.condition_spec import Condition, ConditionContext, apply_plugin

    ctx = ConditionContext(None, None, "s")
    enr = np.ones(100)
    short = Condition("short_out", "enrollment", "x", degrade=lambda e, r, c: (e[:10], {}))
    with pytest.raises(ValueError, match=r"'short_out' returned an enrollment of shape \(10,\)"):
        apply_plugin(short, enr, np.random.default_rng(0), ctx)
    bare = Condition("bare", "enrollment", "x", degrade=lambda e, r, c: e)
    with pytest.raises(TypeError, match="'bare' must return"):
        apply_plugin(bare, enr, np.random.default_rng(0), ctx)
    nan = Condition("nan", "enrollment", "x", degrade=lambda e, r, c: (e * np.nan, {}))
    with pytest.raises(ValueError, match="non-finite"):
        apply_plugin(nan, enr, np.random.default_rng(0), ctx)


def test_user_metric_failures_are_nan_and_slow_ones_respect_the_subset():
    from bench.metrics.spec import Metric, score_user_metrics

    def boom(est, ref, sr):
        if est[0] > 0:
            raise RuntimeError("bad item")
        return float(np.mean(est))

    items = [(np.full(8, v), np.zeros(8), np.zeros(8)) for v in (-1.0, 1.0, -2.0)]
    fast = score_user_metrics([Metric("boom", cost="fast", fn=boom)], items, [True, True, False], 16000)
    np.testing.assert_array_equal(fast["boom_failed"], [False, True, False])
    assert fast["boom"][0] == -1.0 and np.isnan(fast["boom"][1]) and fast["boom"][2] == -2.0
    slow = score_user_metrics([Metric("boom", cost="slow", fn=boom)], items, [True, True, False], 16000)
    assert np.isnan(slow["boom"][2]) and not slow["boom_failed"][2]  # outside the subset: not computed
    refs = []
    score_user_metrics([Metric("noref", cost="fast", needs_reference=False,
                               fn=lambda e, r, sr: refs.append(r) or 0.0)], items[:1], [True], 16000)
    assert refs == [None]


def test_user_condition_and_metric_on_the_smoke_grid(smoke_run, user_plugins, tmp_path):
    """The example package's ``clipped`` and ``lsd`` on the smoke grid (its backbones and students
    from the session's smoke run): rows for the new condition, the metric's columns with CIs and
    paired deltas, and a clipped enrollment that is not the clean one."""
    from bench import run

    _, _, cache, _ = smoke_run
    out = tmp_path / "plugins"
    args = ["--grid", SMOKE, "--out", str(out), "--cache-dir", str(cache), "--no-progress", "--no-figures",
            "--set", "eval.conditions=[clean, clipped]", "--set", "eval.metrics=[si_sdr, lsd]"]
    assert run.main(args) == 0
    per = pd.read_csv(out / "per_utterance.csv")
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(per["condition"]) == {"clean", "clipped"}
    assert per["lsd"].notna().all() and (per["lsd"] > 0).all() and not per["lsd_failed"].any()
    static = board[(board["system"] == "static")].set_index("condition")
    assert {"clean", "clipped", "all"} <= set(static.index)
    assert static.loc["clipped", "lsd_ci_lo"] <= static.loc["clipped", "lsd_mean"] <= static.loc["clipped", "lsd_ci_hi"]
    refiners = board[board["system"].str.startswith("student-") & (board["alpha"] > 0)]
    assert len(refiners) and refiners["d_lsd_mean"].notna().all()
    # the same mixtures, another enrollment: static's outputs differ between the two conditions
    st = per.merge(board[board["system"] == "static"][["cell_id"]].drop_duplicates(), on="cell_id")
    a = st[st["condition"] == "clean"].sort_values("utt")["si_sdr"].to_numpy()
    b = st[st["condition"] == "clipped"].sort_values("utt")["si_sdr"].to_numpy()
    assert a.shape == b.shape and not np.allclose(a, b)
