import numpy as np
import pytest
import torch

from bench.metrics.speaker import agreement, eer, min_dcf, speaker_eval
from tests._kd_helpers import FakeCorpus


def test_eer_perfect_and_inverted():
    s = [0.9, 0.8, 0.7, 0.2, 0.1, 0.0]
    y = [1, 1, 1, 0, 0, 0]
    assert eer(s, y) == pytest.approx(0.0)
    assert eer([-x for x in s], y) == pytest.approx(1.0)
    assert min_dcf(s, y) == pytest.approx(0.0)


def test_eer_known_overlap():
    # targets 0.9 0.6 0.4 0.3 ; non-targets 0.5 0.2 0.1 0.0 -> one swap each side: EER 25 %
    s = [0.9, 0.6, 0.4, 0.3, 0.5, 0.2, 0.1, 0.0]
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    assert eer(s, y) == pytest.approx(0.25)


def test_eer_random_is_about_half():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(4000)
    y = rng.integers(0, 2, 4000)
    assert abs(eer(s, y) - 0.5) < 0.05


def test_min_dcf_known():
    # threshold above everything: P_miss=1, P_fa=0 -> cost 0.01 / 0.01 = 1
    s = [0.0, 1.0]
    y = [1, 0]
    assert min_dcf(s, y) == pytest.approx(1.0)
    # p_target 0.5: min(1*0.5*1 + 0, 0.5*0 + 0.5*1 ...)/0.5 = 1
    assert min_dcf(s, y, p_target=0.5) == pytest.approx(1.0)
    s2 = [0.9, 0.8, 0.85, 0.1]
    y2 = [1, 1, 0, 0]
    # best threshold: accept only 0.9 -> P_miss .5, P_fa 0 -> 0.01*0.5/0.01 = 0.5
    assert min_dcf(s2, y2) == pytest.approx(0.5)


def test_eer_needs_both_classes():
    with pytest.raises(ValueError, match="target"):
        eer([0.1, 0.2], [1, 1])


def test_agreement():
    a = torch.eye(3)
    assert agreement(a, a) == pytest.approx(1.0)
    assert agreement(a, -a) == pytest.approx(-1.0)


def test_speaker_eval_with_oracle_embedding():
    corpus = FakeCorpus(n_train=0, n_val=0, n_test=3, n_utts=3)
    # log band energies, mean removed: separates the synthetic voices (distinct pitch/formant)
    def embed(wav):
        spec = torch.fft.rfft(wav, dim=-1).abs().pow(2)[:, : 64 * 60]
        e = torch.log(spec.reshape(wav.shape[0], 64, 60).sum(-1) + 1e-6)
        return e - e.mean(-1, keepdim=True)

    r = speaker_eval(embed, corpus, "test", n_per_speaker=3, crop_s=1.0, seed=0)
    assert r["n_trials"] == 9 * 8 // 2
    assert r["eer"] < 0.2
    assert set(r) == {"eer", "min_dcf", "n_trials"}
