"""Evaluation conditions: names, unknown names, shapes, determinism, exact levels."""

from __future__ import annotations

import numpy as np
import pytest

from bench.audio import SR
from bench.config import ENROLL_CONDITIONS as CONDITIONS
from bench.data.conditions import apply_condition, bandlimit, colored_noise, drift, scale_to_ratio
from tests._data_helpers import make_corpus, voice


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_speakers=8)


def _parts(corpus):
    spk = corpus.speakers("train")[0]
    us = corpus.utts_of(spk)
    tgt = corpus.audio(us[0].utt_id)
    return {"speaker": spk, "enroll_source": corpus.audio(us[1].utt_id), "target": tgt[:SR],
            "target_source": tgt, "target_offset": 0}


def test_unknown_condition_lists_choices(corpus):
    with pytest.raises(ValueError) as e:
        apply_condition("loud", _parts(corpus), np.random.default_rng(0), corpus)
    assert all(c in str(e.value) for c in CONDITIONS)


@pytest.mark.parametrize("name", CONDITIONS)
def test_each_condition(corpus, name):
    p = _parts(corpus)
    a = apply_condition(name, p, np.random.default_rng(1), corpus, "train", 1.0)
    b = apply_condition(name, p, np.random.default_rng(1), corpus, "train", 1.0)
    np.testing.assert_array_equal(a["enrollment"], b["enrollment"])
    np.testing.assert_array_equal(a["target"], b["target"])
    assert a["enrollment"].dtype == np.float32 and a["enrollment"].shape == a["enrollment_clean"].shape
    assert np.isfinite(a["enrollment"]).all() and a["info"]["condition"] == name
    assert a["target"].shape == p["target"].shape
    if name == "short":
        assert 0.5 * SR <= len(a["enrollment"]) <= 2 * SR
    else:
        assert len(a["enrollment"]) == SR
    changed = not np.array_equal(a["enrollment"], a["enrollment_clean"])
    assert changed == (name not in ("clean", "short", "drift"))
    assert np.array_equal(a["target"], p["target"]) == (name != "drift")
    if name == "competing":
        assert a["info"]["competing_speaker"] != p["speaker"]
        assert -5 <= a["info"]["competing_sir_db"] <= 5
        # the range is a parameter: a narrower one is honoured exactly
        b = apply_condition(name, p, np.random.default_rng(3), corpus, "train", 1.0, competing_sir_db=[2.0, 2.0])
        assert b["info"]["competing_sir_db"] == 2.0
        other = b["enrollment"].astype(np.float64) - b["enrollment_clean"]
        ratio = 10 * np.log10(np.sum(b["enrollment_clean"].astype(np.float64) ** 2) / np.sum(other**2))
        assert abs(ratio - 2.0) < 0.1


def test_helpers():
    rng = np.random.default_rng(0)
    x = voice(120, 1.0, 0)
    for kind in ("white", "pink", "brown"):
        n = colored_noise(kind, SR, rng)
        assert abs(np.mean(n.astype(np.float64) ** 2) - 1) < 1e-3
        y = scale_to_ratio(x, n, 7.5)
        assert abs(10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(y**2)) - 7.5) < 1e-6
    spec = np.abs(np.fft.rfft(colored_noise("white", SR, rng)))
    y, info = bandlimit(colored_noise("white", SR, rng), rng)
    spec_y = np.abs(np.fft.rfft(y))
    assert spec_y[5000:].mean() < 0.01 * spec[5000:].mean() and len(y) == SR
    d, info = drift(x, SR // 2, np.random.default_rng(3))
    assert d.shape == (SR // 2,) and np.allclose(d[:50], x[:50], atol=0.05)
