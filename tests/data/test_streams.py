"""Long test streams of the paper's regime (bench.data.streams)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.audio import SR
from bench.config import MixConfig
from bench.data.mix import make_eval_set
from bench.data.streams import STREAM_CONDITIONS, concat_utterances, speed, stream_speakers
from tests._data_helpers import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("streams"), n_speakers=8, n_utts=4, seconds=2.0, derived=False)


MIX = MixConfig(noise_types=["white"], sir_db=[0.0, 5.0], snr_db=[10.0, 20.0])


def _sets(corpus, n=4, stream_s=8.0):
    return {c: make_eval_set(corpus, "train", MIX, c, n, 7, 4.0, stream_s=stream_s) for c in STREAM_CONDITIONS}


def test_streams_are_long_paired_and_change_once(corpus):
    sets = _sets(corpus)
    n = int(8.0 * SR)
    for cond, ms in sets.items():
        assert len(ms) == 4
        for m in ms:
            assert len(m.mixture) == len(m.target) == n
            np.testing.assert_allclose(m.mixture, m.target + m.interference + m.noise, atol=1e-5)
            meta = m.meta
            assert meta["condition"] == cond
            assert 0.35 * 8.0 <= meta["change_s"] <= 0.65 * 8.0 or cond == "drift_long"
            assert meta["late_start_s"] == pytest.approx(meta["change_s"] + 1.0)
            # the enrollment utterance is never part of the stream
            assert meta["enroll_utt"] not in meta["stream_utts"]
            assert meta["interferers"] and meta["interferers"][0] != m.speaker
    # paired: same speaker, enrollment, interferer and change point in every stream condition
    for i in range(4):
        metas = [sets[c][i].meta for c in STREAM_CONDITIONS[:2]]
        assert metas[0]["enroll_utt"] == metas[1]["enroll_utt"]
        assert metas[0]["change_s"] == metas[1]["change_s"]
        assert sets["voice_change"][i].speaker == sets["channel_change"][i].speaker
        np.testing.assert_array_equal(sets["voice_change"][i].enrollment, sets["channel_change"][i].enrollment)


def test_voice_and_channel_change_leave_the_first_part_alone(corpus):
    sets = _sets(corpus, n=3)
    for i in range(3):
        v, c = sets["voice_change"][i], sets["channel_change"][i]
        cut = int(v.meta["change_s"] * SR)
        # before the change both conditions hold the same dry target (up to the mixing gain)
        a, b = v.target[:cut], c.target[:cut]
        g = float(np.dot(a, b) / max(np.dot(b, b), 1e-12))
        np.testing.assert_allclose(a, g * b, atol=1e-4)
        # after it they differ
        assert not np.allclose(v.target[cut:], g * c.target[cut:], atol=1e-3)
        assert v.meta["voice_rate"] < 0.93 or v.meta["voice_rate"] > 1.07
        assert 200 <= c.meta["channel_highpass_hz"] <= 400 and 3000 <= c.meta["channel_lowpass_hz"] <= 3800


def test_concat_never_loops_one_utterance_and_speed_changes_length(corpus):
    rng = np.random.default_rng(0)
    ids = [u.utt_id for u in corpus.utts_of("spk00")][:2]
    x, starts = concat_utterances(corpus, ids, 3 * SR, rng)
    assert len(x) == 3 * SR and starts[0] == 0 and len(starts) >= 2
    y = speed(np.ones(16000, dtype=np.float32), 1.1)
    assert abs(len(y) - 16000 / 1.1) < 2


def test_stream_speakers_need_two_utterances(tmp_path):
    tiny = make_corpus(tmp_path, n_speakers=3, n_utts=1, derived=False)
    with pytest.raises(ValueError, match=">= 2 utterances"):
        stream_speakers(tiny, None)


def test_streams_follow_the_shares_and_stay_paired(corpus):
    """With ``mix.shares`` a stream holds the noise only, the interferer only or both (as short
    mixtures do), the same choice in every stream condition; all-``both`` shares give the streams
    made without shares, sample for sample."""
    from dataclasses import replace

    n = 24
    shared = replace(MIX, shares=[0.4, 0.2, 0.4])
    sets = {c: make_eval_set(corpus, "train", shared, c, n, 7, 4.0, stream_s=4.0) for c in STREAM_CONDITIONS}
    kinds = []
    for i in range(n):
        held = {(sets[c][i].meta["sir_db"] is not None, sets[c][i].meta["snr_db"] is not None) for c in sets}
        assert len(held) == 1, f"stream {i} holds different sources across conditions: {held}"
        inter, noise = held.pop()
        assert inter or noise
        m = sets["voice_change"][i]
        assert (np.abs(m.interference).max() > 0) == inter and (np.abs(m.noise).max() > 0) == noise
        assert bool(m.meta["interferers"]) == inter
        np.testing.assert_allclose(m.mixture, m.target + m.interference + m.noise, atol=1e-5)
        kinds.append((inter, noise))
    assert {(False, True), (True, False), (True, True)} <= set(kinds)  # all three kinds occur
    plain = make_eval_set(corpus, "train", MIX, "drift_long", 4, 7, 4.0, stream_s=4.0)
    both = make_eval_set(corpus, "train", replace(MIX, shares=[0.0, 0.0, 1.0]), "drift_long", 4, 7, 4.0, stream_s=4.0)
    for a, b in zip(plain, both, strict=True):
        np.testing.assert_array_equal(a.mixture, b.mixture)
        np.testing.assert_array_equal(a.target, b.target)
