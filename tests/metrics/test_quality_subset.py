"""Slow metrics on a subset (``eval.quality_n``) and never twice for the same output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.config import ConfigError, ExperimentConfig
from bench.metrics import quality
from bench.pipeline import eval_slice


def _items(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ref = rng.standard_normal(16000).astype(np.float32) * 0.1
        out.append((ref + 0.05 * rng.standard_normal(16000).astype(np.float32), ref,
                    ref + 0.2 * rng.standard_normal(16000).astype(np.float32)))
    return out


@pytest.fixture
def counted(monkeypatch):
    calls: list[int] = []
    real = quality._slow_metrics

    def slow(est, ref, sr, which):
        calls.append(1)
        return real(est, ref, sr, which)

    monkeypatch.setattr(quality, "_slow_metrics", slow)
    monkeypatch.setattr(quality, "SLOW_MEMO", quality.OrderedDict())
    return calls


def test_subset_scores_slow_metrics_there_only_and_si_sdr_everywhere(counted):
    items = _items(5)
    df = quality.evaluate_utterances(items, workers=1, subset=[True, False, True, False, False])
    assert len(counted) == 2
    assert df["si_sdr"].notna().all()
    assert df["pesq"].notna().tolist() == [True, False, True, False, False]
    assert not df["pesq_failed"].any() and not df["stoi_failed"].any()  # not computed is not failed
    full = quality.evaluate_utterances(items, workers=1)
    np.testing.assert_array_equal(df.loc[[0, 2], "pesq"].to_numpy(), full.loc[[0, 2], "pesq"].to_numpy())
    with pytest.raises(ValueError, match="2 flags for 5 items"):
        quality.evaluate_utterances(items, workers=1, subset=[True, False])


def test_an_output_scored_before_is_not_scored_again(counted):
    items = _items(3)
    first = quality.evaluate_utterances(items, workers=1)
    assert len(counted) == 3
    again = quality.evaluate_utterances([items[1], items[0]], workers=1)
    assert len(counted) == 3  # both came from the memo
    np.testing.assert_array_equal(again["pesq"].to_numpy(), first["pesq"].to_numpy()[[1, 0]])
    changed = [(items[0][0] * 0.5, items[0][1], items[0][2])]  # another output of the same target
    quality.evaluate_utterances(changed, workers=1)
    assert len(counted) == 4
    # another selection of metrics is another entry
    quality.evaluate_utterances(items[:1], workers=1, estoi=False)
    assert len(counted) == 5


@pytest.mark.parametrize("field, value", [("quality_n", 40), ("mos_n", 8), ("evidence_n", 40)])
def test_a_subset_size_is_checked_and_keyed_only_when_set(field, value):
    from bench.pipeline import mixture_key

    with pytest.raises(ConfigError, match=f"eval.{field}"):
        ExperimentConfig.from_dict({"eval": {field: -1}})
    base = ExperimentConfig()
    assert field not in eval_slice(base)["eval"]
    sub = ExperimentConfig.from_dict({"eval": {field: value}})
    assert eval_slice(sub)["eval"][field] == value
    if field != "evidence_n":  # the mixture has no output for the teacher to re-embed
        assert mixture_key(sub, "c") != mixture_key(base, "c")


def test_a_cell_scores_the_first_quality_n_items_of_each_condition(counted):
    from types import SimpleNamespace

    from bench.pipeline.cell import score

    def mix(item, late):
        est, ref, m = item
        return SimpleNamespace(target=ref, mixture=m, speaker="s", meta={"late_start_s": 0.25} if late else {})

    a, b = _items(3, seed=1), _items(4, seed=2)
    sets = {"clean": [mix(x, False) for x in a], "voice_change": [mix(x, True) for x in b]}
    outs = {"clean": [x[0] for x in a], "voice_change": [x[0] for x in b]}
    cfg = ExperimentConfig.from_dict({"eval": {"quality_n": 2, "workers": 1}})
    df = score(cfg, sets, outs)
    got = df.groupby("condition")["pesq"].apply(lambda x: x.notna().tolist()).to_dict()
    assert got == {"clean": [True, True, False], "voice_change": [True, True, False, False]}
    assert df["si_sdr"].notna().all()
    late = df[df["condition"] == "voice_change"]
    assert late["late_pesq"].notna().tolist() == [True, True, False, False] and late["late_si_sdr"].notna().all()


def test_mos_n_gives_dnsmos_a_subset_of_its_own(counted):
    from types import SimpleNamespace

    from bench.pipeline.cell import score

    a = _items(3, seed=3)
    sets = {"clean": [SimpleNamespace(target=r, mixture=m, speaker="s", meta={}) for _, r, m in a]}
    outs = {"clean": [x[0] for x in a]}
    cfg = ExperimentConfig.from_dict({"eval": {"metrics": ["pesq", "dnsmos"], "mos_n": 1, "workers": 1}})
    df = score(cfg, sets, outs)
    assert df["pesq"].notna().all()  # quality_n 0: PESQ on every item
    assert df["dnsmos_ovrl"].notna().tolist() == [True, False, False]
    assert not df["dnsmos_ovrl_failed"].any()  # not computed is not failed
    # the same columns, in the same order, as without a subset of its own
    whole = score(ExperimentConfig.from_dict({"eval": {"metrics": ["pesq", "dnsmos"], "workers": 1}}), sets, outs)
    assert list(df.columns) == list(whole.columns)
    np.testing.assert_allclose(df.loc[0, ["dnsmos_sig", "dnsmos_ovrl", "pesq"]].to_numpy(float),
                               whole.loc[0, ["dnsmos_sig", "dnsmos_ovrl", "pesq"]].to_numpy(float))


def test_both_subsets_are_scored_in_one_pass_with_the_values_of_separate_ones(counted):
    items = _items(4, seed=4)
    q, mos = [True, True, False, False], [True, False, True, False]
    df = quality.evaluate_utterances(items, workers=1, estoi=False, dnsmos=True, subset=q, mos_subset=mos)
    assert len(counted) == 3  # one call per item in either subset; the last item is in neither
    assert df["pesq"].notna().tolist() == q and df["dnsmos_ovrl"].notna().tolist() == mos
    assert not df[[c for c in df if c.endswith("_failed")]].to_numpy().any()  # left out is not failed
    quality.SLOW_MEMO.clear()
    apart = quality.evaluate_utterances(items, workers=1, estoi=False, subset=q)
    mos_only = quality.evaluate_utterances(items, workers=1, pesq=False, stoi=False, estoi=False, dnsmos=True,
                                           subset=mos)
    np.testing.assert_array_equal(df["pesq"].to_numpy(), apart["pesq"].to_numpy())
    np.testing.assert_array_equal(df["stoi"].to_numpy(), apart["stoi"].to_numpy())
    np.testing.assert_array_equal(df["dnsmos_ovrl"].to_numpy(), mos_only["dnsmos_ovrl"].to_numpy())
    with pytest.raises(ValueError, match="mos_subset has 1 flags for 4 items"):
        quality.evaluate_utterances(items, workers=1, mos_subset=[True])


def test_both_subsets_in_worker_processes_give_what_one_process_gives(monkeypatch):
    monkeypatch.setattr(quality, "SLOW_MEMO", quality.OrderedDict())
    items = _items(4, seed=4)
    kw = {"estoi": False, "dnsmos": True, "subset": [True, True, False, False],
          "mos_subset": [True, False, True, False]}
    one = quality.evaluate_utterances(items, workers=1, **kw)
    quality.SLOW_MEMO.clear()
    pooled = quality.evaluate_utterances(items, workers=2, **kw)
    pd.testing.assert_frame_equal(pooled, one)
    assert pooled["pesq"].notna().sum() == 2 and pooled["dnsmos_ovrl"].notna().sum() == 2


def test_evidence_n_re_embeds_the_first_items_only_with_the_values_of_the_whole():
    from types import SimpleNamespace

    import torch

    from bench.pipeline.cell import _speaker_evidence

    class Teacher:
        calls: list[int] = []

        def embed(self, x):
            self.calls.append(x.shape[0])
            return torch.stack([x[:, ::2].sum(1), x[:, 1::2].sum(1), x.abs().sum(1)], dim=1)

    rng = np.random.default_rng(5)
    out = torch.from_numpy(rng.standard_normal((4, 64)).astype(np.float32))
    tgt = rng.standard_normal((4, 3)).astype(np.float32)
    chunk = [SimpleNamespace(target=np.zeros(64), meta={}) for _ in range(4)]
    res = SimpleNamespace(embeddings=None)
    t = Teacher()
    whole = _speaker_evidence(t, "cpu", out, chunk, tgt, tgt, res)
    part = _speaker_evidence(t, "cpu", out, chunk, tgt, tgt, res, n_out=2)
    none = _speaker_evidence(t, "cpu", out, chunk, tgt, tgt, res, n_out=0)
    assert t.calls == [4, 2]  # nothing embedded for n_out=0
    np.testing.assert_allclose(part["out_cos"][:2], whole["out_cos"][:2], rtol=1e-6)
    assert np.isnan(part["out_cos"][2:]).all() and np.isnan(none["out_cos"]).all()
    assert np.isfinite(whole["out_cos"]).all()
