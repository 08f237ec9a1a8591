"""Statistics of a leaderboard, in one place.

* :func:`bootstrap_ci` / :func:`bootstrap_mean`: percentile bootstrap of a mean over test
  mixtures (:func:`scipy.stats.bootstrap`, seeded, NaN ignored).
* :func:`cluster_bootstrap_mean`: the same, resampling whole *clusters* (a pooled row holds every
  mixture once per condition; the unit that is resampled is the mixture, with all its rows).
* :func:`bootstrap_ratio`: ratio of paired means with a paired bootstrap CI (fraction of the
  headroom a refiner recovers).
* :func:`paired_p`: two-sided Wilcoxon signed-rank test of paired differences against 0
  (differences below :data:`PAIRED_TOL` are 0; all of them 0: p = 1).
* :func:`holm`: Holm's step-down correction of a family of p-values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

LEVEL = 0.95


def _finite(values: Any) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    return x[np.isfinite(x)]


def bootstrap_ci(values: Any, n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of the finite ``values`` (NaN, NaN if none).

    One value, or ``n_boot < 1``, has no spread to resample: the CI is NaN (never a zero-width
    interval that would look like certainty).
    """
    from scipy import stats

    x = _finite(values)
    if x.size < 2 or n_boot < 1 or np.all(x == x[0]):
        if x.size >= 2 and n_boot >= 1:  # constant data: the mean is exact
            return float(x[0]), float(x[0])
        return float("nan"), float("nan")
    res = stats.bootstrap((x,), np.mean, n_resamples=int(n_boot), confidence_level=level,
                          method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_mean(values: Any, n_boot: int = 1000, seed: int = 0,
                   level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, ci_lo, ci_hi)`` of the finite ``values`` (all NaN when there are none)."""
    x = _finite(values)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_ci(x, n_boot, seed, level)
    return float(x.mean()), lo, hi


def cluster_bootstrap_mean(values: Any, clusters: Any, n_boot: int = 1000, seed: int = 0,
                           level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of ``values`` with a bootstrap CI that resamples whole clusters.

    Each resample draws as many clusters as there are, with replacement, and takes the mean of
    every finite value of the drawn clusters (a cluster drawn twice counts twice).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    c = np.asarray(clusters).reshape(-1)
    ok = np.isfinite(v)
    v, c = v[ok], c[ok]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    ids, inv = np.unique(c, return_inverse=True)
    sums = np.bincount(inv, weights=v, minlength=ids.size)
    counts = np.bincount(inv, minlength=ids.size).astype(np.float64)
    mean = float(v.mean())
    if ids.size < 2 or n_boot < 1:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, ids.size, size=(int(n_boot), ids.size))
    boot = sums[draw].sum(1) / counts[draw].sum(1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
    return mean, float(lo), float(hi)


def bootstrap_ratio(num: Any, den: Any, n_boot: int = 1000, seed: int = 0,
                    level: float = LEVEL) -> tuple[float, float, float]:
    """``mean(num) / mean(den)`` over paired items, with a paired percentile-bootstrap CI."""
    num = np.asarray(num, dtype=np.float64).reshape(-1)
    den = np.asarray(den, dtype=np.float64).reshape(-1)
    ok = np.isfinite(num) & np.isfinite(den)
    num, den = num[ok], den[ok]
    if num.size == 0 or den.mean() == 0:
        return float("nan"), float("nan"), float("nan")
    ratio = float(num.mean() / den.mean())
    if num.size < 2 or n_boot < 1:
        return ratio, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(int(n_boot), num.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num[idx].mean(axis=1) / den[idx].mean(axis=1)
    r = r[np.isfinite(r)]
    if not r.size:
        return ratio, float("nan"), float("nan")
    lo, hi = np.quantile(r, [(1 - level) / 2, 1 - (1 - level) / 2])
    return ratio, float(lo), float(hi)


PAIRED_TOL = 1e-9  # far below any metric's resolution, far above float noise (about 1e-16)


def paired_p(diff: Any, tol: float = PAIRED_TOL) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences against 0.

    Differences are counted in whole units of ``tol``: the float noise of two cells that compute
    the same thing (``+-5e-17``) is exactly 0, and near-equal differences tie, so the p-value does
    not depend on the order of float operations. All differences 0: p = 1 (no evidence of any
    difference); fewer than 2 finite differences, or a single non-zero one: NaN.
    """
    from scipy import stats

    d = _finite(diff)
    k = np.rint(d / tol)  # the signed-rank test only sees signs and ranks: units of tol keep both
    if np.count_nonzero(k) < 2:
        return float("nan") if k.size < 2 or np.any(k) else 1.0
    return float(stats.wilcoxon(k, zero_method="wilcox", alternative="two-sided").pvalue)


def sign_flip_p(values: Any, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of the mean of ``values`` against 0.

    Under the null each value is as likely negative as positive (paired differences of exchangeable
    systems), so every value's sign is flipped at random and the observed ``|mean|`` is ranked among
    the flipped means (the observed one counted in, so p >= 1 / (n_perm + 1)). It tests the mean the
    bootstrap CIs describe, where the Wilcoxon test answers for the median. Seeded, and the same
    for any order of the values. Fewer than 2 finite
    values: NaN; all zero: 1.
    """
    v = np.sort(_finite(values))  # sorted: the same p whatever order the values come in
    if v.size < 2:
        return float("nan")
    if not np.any(np.abs(v) > PAIRED_TOL):
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, v.size))
    flipped = np.abs(signs @ v) / v.size
    observed = abs(float(v.mean()))
    return float((1 + np.count_nonzero(flipped >= observed - PAIRED_TOL)) / (n_perm + 1))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (NaN entries stay NaN and do not count in the family)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
