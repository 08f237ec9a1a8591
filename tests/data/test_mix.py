"""Mixtures: exact SNR/SIR, component consistency, batches, determinism, eval sets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.audio import SR
from bench.config import CONDITIONS, MixConfig
from bench.data.mix import (
    MixtureSampler,
    load_eval_set,
    make_eval_set,
    measured_ratio_db,
    save_eval_set,
)
from tests._data_helpers import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_speakers=10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sir=st.floats(-10, 15), snr=st.floats(-5, 30),
       noise=st.sampled_from(["white", "pink", "brown", "babble", "samples"]),
       n_int=st.sampled_from([1, 2]))
def test_sir_snr_exact(corpus, seed, sir, snr, noise, n_int):
    cfg = MixConfig(sir_db=[sir, sir], snr_db=[snr, snr], noise_types=[noise], n_interferers=[n_int])
    s = MixtureSampler(corpus, "train", cfg, seed)
    m = s.sample(np.random.default_rng(seed), 1.0)
    assert m.mixture.shape == m.target.shape == (SR,)
    assert abs(measured_ratio_db(m.target, m.interference) - sir) < 0.1
    assert abs(measured_ratio_db(m.target, m.noise) - snr) < 0.1
    assert m.meta["sir_db"] == pytest.approx(sir) and m.meta["snr_db"] == pytest.approx(snr)
    np.testing.assert_allclose(m.mixture, m.target + m.interference + m.noise, atol=1e-6)
    assert np.abs(m.mixture).max() <= 0.95 + 1e-6
    assert len(m.meta["interferers"]) == n_int and m.speaker not in m.meta["interferers"]


def test_room_levels_exact(corpus):
    cfg = MixConfig(sir_db=[2.0, 2.0], snr_db=[10.0, 10.0], room_prob=1.0, noise_types=["pink"])
    m = MixtureSampler(corpus, "train", cfg, 0).sample(np.random.default_rng(3), 1.0)
    assert m.meta["room"] and 0.2 <= m.meta["rt60_s"] <= 0.8
    assert abs(measured_ratio_db(m.target, m.interference) - 2.0) < 0.1
    assert abs(measured_ratio_db(m.target, m.noise) - 10.0) < 0.1


def test_batch_shapes_and_enrollment(corpus):
    cfg = MixConfig(enroll_s=1.5)
    s = MixtureSampler(corpus, "train", cfg, 0)
    b = s.batch(np.random.default_rng(0), 4, 0.5)
    assert tuple(b["mixture"].shape) == (4, SR // 2) == tuple(b["target"].shape)
    assert tuple(b["enrollment"].shape) == (4, int(1.5 * SR))
    assert b["speaker_idx"].dtype.is_floating_point is False
    for i in range(4):
        spk = s.speakers[int(b["speaker_idx"][i])]
        assert b["utt_ids"][i].startswith(spk + "_") and b["enroll_ids"][i].startswith(spk + "_")
        assert b["utt_ids"][i] != b["enroll_ids"][i]
        # deterministic enrollment: first enroll_s seconds of the enroll utterance (looped)
        x = corpus.audio(b["enroll_ids"][i])
        n = min(len(x), int(1.5 * SR))
        np.testing.assert_array_equal(b["enrollment"][i, :n].numpy(), x[:n])


def test_determinism(corpus):
    cfg = MixConfig()
    a = MixtureSampler(corpus, "train", cfg, 1).batch(np.random.default_rng(9), 3, 0.5)
    b = MixtureSampler(corpus, "train", cfg, 1).batch(np.random.default_rng(9), 3, 0.5)
    for k in ("mixture", "target", "enrollment", "speaker_idx"):
        assert np.array_equal(a[k].numpy(), b[k].numpy())
    assert a["utt_ids"] == b["utt_ids"]


def test_too_few_speakers(tmp_path):
    c = make_corpus(tmp_path, n_speakers=3, derived=False)
    split = next(s for s in ("train", "val", "test") if len(c.speakers(s)) == 1)
    with pytest.raises(ValueError, match="needs >= 2"):
        MixtureSampler(c, split, MixConfig(), 0)


def test_eval_sets_paired_and_round_trip(corpus, tmp_path):
    cfg = MixConfig(enroll_s=1.0)
    sets = {c: make_eval_set(corpus, "train", cfg, c, 3, 7, 1.0) for c in ("clean", "short", "noisy", "competing", "drift")}
    clean = sets["clean"]
    for name, ms in sets.items():
        assert len(ms) == 3
        for a, b in zip(clean, ms, strict=True):
            assert a.speaker == b.speaker and a.meta["target_utt"] == b.meta["target_utt"]
            assert a.meta["enroll_utt"] == b.meta["enroll_utt"] and b.meta["condition"] == name
            if name == "drift":
                assert not np.array_equal(a.target, b.target)
                assert 0.85 < b.meta["drift_rate"] < 1.16
            else:
                np.testing.assert_array_equal(a.mixture, b.mixture)
                np.testing.assert_array_equal(a.target, b.target)
    assert all(0.5 * SR <= len(m.enrollment) <= 2 * SR for m in sets["short"])
    assert all(len(m.enrollment) == SR for m in clean)
    np.testing.assert_array_equal(clean[0].enrollment, clean[0].enrollment_clean)
    assert not np.array_equal(sets["competing"][0].enrollment, sets["competing"][0].enrollment_clean)
    again = make_eval_set(corpus, "train", cfg, "noisy", 3, 7, 1.0)
    for a, b in zip(sets["noisy"], again, strict=True):
        np.testing.assert_array_equal(a.enrollment, b.enrollment)
    p = tmp_path / "ev.npz"
    save_eval_set(p, sets["noisy"])
    back = load_eval_set(p)
    for a, b in zip(sets["noisy"], back, strict=True):
        for k in ("mixture", "target", "enrollment", "enrollment_clean", "interference", "noise"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
        assert a.speaker == b.speaker and a.meta == b.meta
    with pytest.raises(ValueError, match="choices"):
        make_eval_set(corpus, "train", cfg, "bogus", 1, 0, 1.0)
    assert set(sets) <= set(CONDITIONS)
