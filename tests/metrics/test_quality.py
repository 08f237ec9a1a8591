"""Quality metrics: SI-SDR by hand, PESQ/STOI sanity and failures, evaluation, bootstrap."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.audio import SR
from bench.metrics import quality as q


def _speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonic tone + modulated noise (PESQ's VAD finds 'speech' in it)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = np.sin(2 * np.pi * 3 * t) ** 2
    x = sum(
        np.sin(2 * np.pi * f * t + p) / k
        for k, (f, p) in enumerate([(180, 0), (360, 1), (720, 2)], 1)
    )
    x = env * x + 0.2 * env * rng.standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


# --------------------------------------------------------------------------- SI-SDR
def test_si_sdr_hand_computed():
    ref = np.array([1.0, -1.0, 1.0, -1.0])
    # est = ref + n with n orthogonal to ref, ||n||^2 = ||ref||^2 -> 0 dB
    assert q.si_sdr(ref + np.array([1.0, 1.0, -1.0, -1.0]), ref) == pytest.approx(0.0, abs=1e-9)
    # est = 2 ref + n: target energy 16, noise 4 -> 10 log10(4)
    assert q.si_sdr(2 * ref + np.array([1.0, 1.0, -1.0, -1.0]), ref) == pytest.approx(
        10 * math.log10(4)
    )
    # zero-mean: a DC offset in est does not matter
    assert q.si_sdr(ref + 5.0 + np.array([1.0, 1.0, -1.0, -1.0]), ref) == pytest.approx(
        0.0, abs=1e-9
    )
    # SI-SDRi = SI-SDR(est) - SI-SDR(mix)
    mix = ref + 2 * np.array([1.0, 1.0, -1.0, -1.0])  # noise energy 16 -> -6.02 dB
    est = 2 * ref + np.array([1.0, 1.0, -1.0, -1.0])
    assert q.si_sdri(est, ref, mix) == pytest.approx(10 * math.log10(4) - 10 * math.log10(4 / 16))


def test_si_sdr_nan_cases():
    assert math.isnan(q.si_sdr(np.ones(4), np.zeros(4)))  # silent reference
    assert math.isnan(q.si_sdr(np.ones(4), np.ones(5)))  # length mismatch
    assert math.isnan(q.si_sdr(np.array([1.0, np.nan]), np.array([1.0, 2.0])))
    assert math.isnan(q.si_sdr(np.array([]), np.array([])))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(1e-3, 1e3),
    ref_scale=st.floats(1e-2, 1e2),
)
def test_si_sdr_scale_invariant(seed, scale, ref_scale):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(256)
    est = ref + 0.5 * rng.standard_normal(256)
    base = q.si_sdr(est, ref)
    assert q.si_sdr(scale * est, ref) == pytest.approx(base, abs=1e-6)
    assert q.si_sdr(est, ref_scale * ref) == pytest.approx(base, abs=1e-6)


# --------------------------------------------------------------------------- PESQ / STOI
def test_pesq_identical_high_noisy_lower():
    ref = _speechlike()
    assert q.pesq_wb(ref, ref) > 4.0
    noisy = ref + 0.05 * np.random.default_rng(1).standard_normal(ref.size).astype(np.float32)
    assert 1.0 <= q.pesq_wb(noisy, ref) < q.pesq_wb(ref, ref)


def test_pesq_failures_are_nan():
    ref = _speechlike()
    assert math.isnan(q.pesq_wb(np.zeros_like(ref), np.zeros_like(ref)))  # silence
    assert math.isnan(q.pesq_wb(ref[:3000], ref[:3000]))  # < 0.25 s
    assert math.isnan(q.pesq_wb(ref, ref[:-1]))  # length mismatch


def test_pesq_forced_library_failure(monkeypatch):
    import pesq

    def boom(*args, **kwargs):
        raise RuntimeError("forced")

    monkeypatch.setattr(pesq, "pesq", boom)
    ref = _speechlike()
    assert math.isnan(q.pesq_wb(ref, ref))
    df = q.evaluate_utterances([(ref, ref, ref)], workers=1)
    assert math.isnan(df.loc[0, "pesq"]) and bool(df.loc[0, "pesq_failed"])
    assert not bool(df.loc[0, "stoi_failed"])

    monkeypatch.setattr(pesq, "pesq", lambda *a, **k: -0.5)  # negative MOS -> failed
    assert math.isnan(q.pesq_wb(ref, ref))


def test_stoi_sane():
    ref = _speechlike(1.5)
    noisy = ref + 0.2 * np.random.default_rng(2).standard_normal(ref.size).astype(np.float32)
    assert q.stoi(ref, ref) == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < q.stoi(noisy, ref) < 0.99
    assert q.estoi(noisy, ref) < q.estoi(ref, ref)
    assert math.isnan(q.stoi(np.zeros(8000), np.zeros(8000)))  # silent reference
    assert math.isnan(q.stoi(ref[:100], ref[:100]))  # no frame left
    assert math.isnan(q.estoi(ref, ref[:-5]))


# --------------------------------------------------------------------------- evaluation
def _items(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    ref = _speechlike(1.0)
    rng = np.random.default_rng(3)
    out = []
    for k in range(n):
        noise = rng.standard_normal(ref.size).astype(np.float32)
        out.append((ref + (0.02 + 0.05 * k) * noise, ref, ref + 0.5 * noise))
    return out


def test_evaluate_utterances_keeps_rows_order_and_counts_failures():
    items = _items(4)
    silent = np.zeros_like(items[0][1])
    items.insert(2, (silent, silent, silent))  # every metric fails on this row
    df = q.evaluate_utterances(items, workers=2)
    assert len(df) == 5
    expected = [q.si_sdr(e, r) for e, r, _ in items]
    np.testing.assert_allclose(df["si_sdr"].to_numpy(), expected, equal_nan=True)
    assert df["si_sdr"].iloc[[0, 1, 3, 4]].is_monotonic_decreasing  # order kept
    for m in q.METRICS:
        assert df[f"{m}_failed"].tolist() == [False, False, True, False, False], m
    assert df["pesq"].iloc[[0, 1, 3, 4]].notna().all()
    assert int(df["pesq"].notna().sum()) == 4 and int(df["pesq_failed"].sum()) == 1
    serial = q.evaluate_utterances(items, workers=1)
    np.testing.assert_allclose(
        serial[list(q.METRICS)].to_numpy(), df[list(q.METRICS)].to_numpy(), equal_nan=True
    )


def test_evaluate_utterances_without_pesq_and_empty():
    df = q.evaluate_utterances(_items(2), workers=1, pesq=False)
    assert df["pesq"].isna().all() and not df["pesq_failed"].any()
    empty = q.evaluate_utterances([], workers=2)
    assert len(empty) == 0 and "pesq_failed" in empty


def test_worker_crash_does_not_crash_run(monkeypatch):
    items = _items(3)
    crash_len = items[1][0].size - 1
    items[1] = (items[1][0][:-1], items[1][1][:-1], items[1][2][:-1])
    real = q.pesq_wb

    def crashing(est, ref, sr=SR):
        if np.asarray(est).size == crash_len:
            os._exit(1)  # a C-library segfault, as far as the pool can tell
        return real(est, ref, sr)

    monkeypatch.setattr(q, "pesq_wb", crashing)  # inherited by forked workers
    with pytest.warns(RuntimeWarning, match="worker died"):
        df = q.evaluate_utterances(items, workers=2, mp_context="fork")
    assert len(df) == 3
    assert df["pesq_failed"].tolist() == [False, True, False]
    assert df["pesq"].iloc[[0, 2]].notna().all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(400, 4000), noise=st.floats(0.01, 3.0))
def test_one_si_sdr_agrees_with_torchmetrics_and_the_training_twin(seed, n, noise):
    """The reported SI-SDR equals torchmetrics' (zero-mean) on random signals, and the training
    loss's batch twin (bench.pse.train.si_sdr, float32) agrees with it."""
    import torch
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio as tm_si_sdr

    from bench.pse.train import si_sdr as train_si_sdr

    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((3, n))
    est = ref * rng.uniform(0.2, 2.0, (3, 1)) + noise * rng.standard_normal((3, n)) + rng.uniform(-1, 1, (3, 1))
    ours = np.array([q.si_sdr(e, r) for e, r in zip(est, ref, strict=True)])
    theirs = tm_si_sdr(torch.from_numpy(est), torch.from_numpy(ref), zero_mean=True).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    twin = train_si_sdr(torch.from_numpy(est).float(), torch.from_numpy(ref).float()).numpy()
    np.testing.assert_allclose(twin, ours, atol=2e-3)


def test_stoi_agrees_with_torchmetrics():
    """STOI and ESTOI equal torchmetrics' (which wraps pystoi) on the same audio."""
    import torch
    from torchmetrics.functional.audio import short_time_objective_intelligibility as tm_stoi

    rng = np.random.default_rng(3)
    t = np.arange(SR * 2) / SR
    ref = (np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float64)
    est = ref + 0.3 * rng.standard_normal(len(ref))
    for extended, ours in ((False, q.stoi(est, ref)), (True, q.estoi(est, ref))):
        theirs = float(tm_stoi(torch.from_numpy(est), torch.from_numpy(ref), SR, extended=extended))
        assert ours == pytest.approx(theirs, abs=1e-6)
