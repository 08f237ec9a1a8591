"""bench.metrics.stats: bootstrap (plain and by cluster), paired test, Holm."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.metrics.stats import (
    bootstrap_ci,
    bootstrap_mean,
    cluster_bootstrap_mean,
    holm,
    paired_p,
    sign_flip_p,
)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    x = np.random.default_rng(0).normal(2.0, 1.0, 80)
    m, lo, hi = bootstrap_mean(x, 500, seed=3)
    assert lo < m < hi and m == pytest.approx(x.mean())
    assert bootstrap_mean(x, 500, seed=3) == (m, lo, hi)


def test_no_resamples_or_one_value_gives_no_interval():
    assert all(np.isnan(v) for v in bootstrap_ci([1.0, 2.0, 3.0], n_boot=0))
    assert all(np.isnan(v) for v in bootstrap_ci([1.0]))
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert np.isnan(bootstrap_mean([np.nan, np.nan])[0])


def test_cluster_bootstrap_is_wider_when_rows_repeat_a_mixture():
    rng = np.random.default_rng(1)
    per_mix = rng.normal(0.0, 1.0, 40)
    # every mixture appears in 3 conditions with nearly the same value: 120 rows, 40 clusters
    values = np.concatenate([per_mix + rng.normal(0, 0.01, 40) for _ in range(3)])
    clusters = np.tile(np.arange(40), 3)
    _, lo_c, hi_c = cluster_bootstrap_mean(values, clusters, 2000, 0)
    _, lo_i, hi_i = bootstrap_mean(values, 2000, 0)
    assert (hi_c - lo_c) > 1.4 * (hi_i - lo_i)  # ~sqrt(3) wider: the rows were never independent


def test_holm_hand_example_and_nan():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(.03, 2*.03), max(.06, .04)
    assert holm([0.01, 0.04, np.nan, 0.03]) == pytest.approx([0.03, 0.06, np.nan, 0.06], nan_ok=True)
    assert holm([]) == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_is_monotone_and_never_below_raw(ps):
    adj = np.array(holm(ps))
    raw = np.array(ps)
    assert np.all(adj >= raw - 1e-12) and np.all(adj <= 1.0)
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-12)


def test_paired_p_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(2)
    assert paired_p(rng.normal(1.0, 1.0, 60)) < 1e-4
    assert paired_p(rng.normal(0.0, 1.0, 60)) > 0.01
    assert paired_p(np.zeros(10)) == 1.0
    assert np.isnan(paired_p([1.0]))


def test_paired_p_of_float_noise_is_one_and_deterministic():
    rng = np.random.default_rng(0)
    for _ in range(5):  # identical cells: differences are float noise of either sign
        noise = rng.choice([-5e-17, 0.0, 5e-17, 1.1e-16], size=40)
        assert paired_p(noise) == 1.0
    # a real effect is unchanged by noise on top of it: the same p from either run
    d = rng.normal(0.3, 1.0, 40)
    assert paired_p(d) == paired_p(d + rng.choice([-5e-17, 5e-17], size=40)) == paired_p(d)
    # equal differences tie whatever their last bits
    tied = np.array([0.1, 0.1, 0.2, -0.05, 0.3, 0.1, 0.25, 0.15])
    assert paired_p(tied) == paired_p(tied + np.array([1e-16, -1e-16, 0, 0, 0, 5e-17, 0, 0]))


def test_sign_flip_p_tests_the_mean_where_the_median_test_does_not():
    rng = np.random.default_rng(1)
    assert sign_flip_p(rng.normal(0.8, 1.0, 60)) < 0.01
    assert sign_flip_p(rng.normal(0.0, 1.0, 60)) > 0.05  # (seeded draw: no evidence)
    # most values slightly negative, a few large positive: the mean is positive, the median not
    skewed = np.r_[np.full(70, -0.3), np.full(30, 2.0)]
    skewed = skewed + rng.normal(0, 0.05, skewed.size)
    assert skewed.mean() > 0.3 and sign_flip_p(skewed) < 0.01
    assert paired_p(skewed) > 0.05
    assert sign_flip_p(np.zeros(10)) == 1.0 and np.isnan(sign_flip_p([1.0]))
    assert sign_flip_p([1.0, 2.0, 3.0], n_perm=99) >= 1 / 100  # the observed arrangement counts


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=40))
def test_sign_flip_p_is_a_probability_whatever_the_order_of_the_values(vals):
    v = np.asarray(vals)
    p = sign_flip_p(v, n_perm=200)
    assert 0 < p <= 1
    assert p == sign_flip_p(v[::-1], n_perm=200)  # order-free
