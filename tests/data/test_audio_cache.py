"""Decoded audio under a byte budget: LRU eviction, exact partial reads, the same mixtures."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bench.audio import SR
from bench.cache import Cache, config_hash
from bench.config import CONDITIONS, ConfigError, CorpusConfig, ExperimentConfig, MixConfig
from bench.data import corpus as corpus_mod
from bench.data.audio_cache import DEFAULT_AUDIO_CACHE_MB, MB, AudioCache, exact_partial
from bench.data.conditions import fit_length
from bench.data.corpus import Corpus, Utterance, load_corpus, write_manifest
from bench.data.mix import MixtureSampler, make_eval_set
from bench.metrics.speaker import crop_audio, eval_crops
from tests._data_helpers import make_corpus, voice


def test_lru_keeps_the_most_recent_within_the_budget():
    c = AudioCache(budget=3000)
    a, b, d = (np.zeros(250, np.float32) for _ in range(3))  # 1000 bytes each
    c.put("a", a)
    c.put("b", b)
    c.put("d", d)
    assert c.nbytes == 3000 and len(c) == 3
    assert c.get("a") is a  # now the most recent: b goes first
    c.put("e", np.zeros(250, np.float32))
    assert "b" not in c and {"a", "d", "e"} <= set(c._items) and c.nbytes == 3000 and c.evictions == 1
    c.put("big", np.zeros(1000, np.float32))  # larger than the whole budget: not kept, nothing evicted
    assert "big" not in c and c.nbytes == 3000
    c.set_budget(1500)
    assert c.nbytes <= 1500 and "e" in c
    assert c.peak == 3000
    c.set_budget(None)
    for k in range(10):
        c.put(k, np.zeros(250, np.float32))
    assert c.nbytes == 11_000


@pytest.mark.parametrize("fmt,subtype,channels", [
    ("WAV", "PCM_16", 1), ("WAV", "PCM_24", 1), ("WAV", "FLOAT", 1), ("FLAC", "PCM_16", 1), ("WAV", "PCM_16", 2),
])
def test_pieces_read_alone_equal_pieces_of_the_whole(tmp_path, fmt, subtype, channels):
    x = np.stack([voice(110 + 40 * k, 1.3, k) for k in range(channels)], axis=1)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(str(path), x, SR, format=fmt, subtype=subtype)
    assert exact_partial(path) == len(x)
    u = Utterance("a", path.name, "s")
    whole = Corpus(tmp_path, tmp_path / "none.csv", [u], audio_cache_mb=None).audio("a")
    c = Corpus(tmp_path, tmp_path / "none.csv", [u], audio_cache_mb=0)  # keeps nothing: every piece read alone
    assert c.frames("a") == len(whole)
    for start, n in ((0, 100), (777, 4000), (len(whole) - 50, 50), (len(whole) - 50, 500), (5, len(whole) + 9)):
        got = c.crop("a", start, n)
        np.testing.assert_array_equal(got, fit_length(whole, n, start))
        assert got.dtype == np.float32 and got.shape == (n,)
    for a, b in ((0, 100), (900, 5000), (len(whole) - 10, len(whole) + 90), (len(whole) + 5, len(whole) + 20)):
        np.testing.assert_array_equal(c.segment("a", a, b), crop_audio(whole, a, b))
    assert c.power("a") == float(np.mean(whole.astype(np.float64) ** 2))
    assert c.audio_cache_stats()["nbytes"] == 0


def test_lossy_and_resampled_files_are_read_whole_then_from_the_resampled_copy(tmp_path, monkeypatch):
    sf.write(str(tmp_path / "v.ogg"), voice(120, 1.0, 0), SR, format="OGG", subtype="VORBIS")
    sf.write(str(tmp_path / "r.wav"), voice(150, 1.0, 1, sr=22050), 22050)
    assert exact_partial(tmp_path / "v.ogg") is None and exact_partial(tmp_path / "r.wav") is None
    utts = [Utterance("v", "v.ogg", "s"), Utterance("r", "r.wav", "t", native_sample_rate=22050)]
    whole = Corpus(tmp_path, tmp_path / "none.csv", [Utterance(**vars(u)) for u in utts],
                   resample_dir=tmp_path / "rs", audio_cache_mb=None)
    ref = {k: np.array(whole.audio(k)) for k in ("v", "r")}
    partial_reads = []
    real = corpus_mod.read_frames
    monkeypatch.setattr(corpus_mod, "read_frames", lambda p, s, n: partial_reads.append(p) or real(p, s, n))
    c = Corpus(tmp_path, tmp_path / "none.csv", utts, resample_dir=tmp_path / "rs", audio_cache_mb=0)
    for k in ("v", "r"):
        np.testing.assert_array_equal(c.crop(k, 300, 2000), fit_length(ref[k], 2000, 300))
        np.testing.assert_array_equal(c.segment(k, 10, 900), crop_audio(ref[k], 10, 900))
    assert all("rs" in p for p in partial_reads) and partial_reads  # only from the 16 kHz float copy


def _bigger_than(budget_mb: float, tmp_path):
    c = make_corpus(tmp_path, n_speakers=8, n_utts=4, seconds=2.5)
    total = sum(c.frames(u.utt_id) * 4 for u in c.utterances)
    assert total > 3 * budget_mb * MB  # the corpus's audio does not fit
    return c


def _draws(corpus, sizes: list[int]) -> list:
    """Training batches, eval sets of every condition and speaker crops, and the resident bytes
    after each batch."""
    mix = MixConfig(noise_types=["white", "babble", "samples"], n_interferers=[1, 2], room_prob=0.3)
    s = MixtureSampler(corpus, "train", mix, seed=1)
    rng = np.random.default_rng(7)
    out = []
    for _ in range(12):
        b = s.batch(rng, batch_size=4)
        out.append([b["mixture"].numpy(), b["target"].numpy(), b["enrollment"].numpy(), b["utt_ids"], b["enroll_ids"]])
        sizes.append(corpus.audio_cache_stats()["nbytes"])
    for cond in CONDITIONS:
        for m in make_eval_set(corpus, "test", mix, cond, 3, 5, 2.0, stream_s=6.0):
            out.append([m.mixture, m.target, m.enrollment, m.enrollment_clean, m.meta])
        sizes.append(corpus.audio_cache_stats()["nbytes"])
    out.append(eval_crops(corpus, None, 3, 1.0, 0))
    return out


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, (list, tuple)):
            _same(x, y)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def test_a_corpus_larger_than_the_budget_gives_the_same_mixtures_within_it(tmp_path, monkeypatch):
    budget_mb = 0.25
    unbounded = _bigger_than(budget_mb, tmp_path)
    unbounded.set_audio_cache_mb(None)
    free: list[int] = []
    ref = _draws(unbounded, free)
    assert max(free) > 3 * budget_mb * MB  # unbounded, it holds much more than the budget

    reads = []
    real = corpus_mod.read_frames
    monkeypatch.setattr(corpus_mod, "read_frames", lambda p, s, n: reads.append(n) or real(p, s, n))
    for mb in (budget_mb, 0.0):
        bounded = Corpus(tmp_path, tmp_path / "manifest.csv", audio_cache_mb=mb)
        sizes: list[int] = []
        _same(_draws(bounded, sizes), ref)
        stats = bounded.audio_cache_stats()
        assert max(sizes) <= mb * MB and stats["peak"] <= mb * MB
        assert stats["misses"] > 0 and (stats["evictions"] > 0 or mb == 0)
    assert reads  # pieces of the evicted utterances were read alone


def test_training_batches_do_not_depend_on_the_budget(tmp_path):
    """The training loop's batches (``MixtureSampler.batch`` from a step's generator) are the same
    bit for bit with the default budget, none and a tiny one."""
    make_corpus(tmp_path, n_speakers=6, n_utts=3)
    out = []
    for mb in (None, DEFAULT_AUDIO_CACHE_MB, 0.05):
        c2 = Corpus(tmp_path, tmp_path / "manifest.csv", audio_cache_mb=mb)
        s = MixtureSampler(c2, "train", MixConfig(), seed=0)
        out.append([s.batch(np.random.default_rng([3, k]), batch_size=3)["mixture"].numpy() for k in range(6)])
    for other in out[1:]:
        _same(other, out[0])


def test_the_budget_is_a_config_value_in_no_key(tmp_path):
    from bench.pipeline.keys import eval_slice

    assert CorpusConfig().audio_cache_mb == DEFAULT_AUDIO_CACHE_MB
    base = ExperimentConfig()
    small = ExperimentConfig.from_dict({"corpus": {"audio_cache_mb": 64}, "test_corpus": {"audio_cache_mb": 8}})
    assert config_hash(eval_slice(base)) == config_hash(eval_slice(small))
    assert "audio_cache_mb" not in base.to_dict()["corpus"] and "audio_cache_mb" not in base.to_dict()["test_corpus"]
    assert small.to_dict()["corpus"]["audio_cache_mb"] == 64
    assert ExperimentConfig.from_dict(small.to_dict()) == small
    with pytest.raises(ConfigError, match="corpus.audio_cache_mb"):
        ExperimentConfig.from_dict({"corpus": {"audio_cache_mb": -1}})
    # load_corpus hands the value to the corpus
    make_corpus(tmp_path / "c", n_speakers=4, n_utts=2)
    rows = ["path,speaker"] + [f"c/audio/spk{s:02d}_{k}.wav,spk{s:02d}" for s in range(4) for k in range(2)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    c = load_corpus(CorpusConfig(name="manifest", path=str(tmp_path / "m.csv"), audio_cache_mb=2), Cache(tmp_path / "cache"))
    assert c.audio_cache_stats()["budget"] == 2 * MB


def test_validation_and_resplit_keep_the_budget(tmp_path):
    from bench.data.corpus import resplit
    from bench.data.validate import validate

    c = make_corpus(tmp_path, n_speakers=6, n_utts=3)
    c.set_audio_cache_mb(1.5)
    assert resplit(c, 0.2, 0.2, 1).audio_cache_mb == 1.5
    utts = list(c.utterances) + [Utterance("zz_bad", "audio/missing.wav", "spk00")]
    write_manifest(tmp_path / "m2.csv", utts)
    bad = Corpus(tmp_path, tmp_path / "m2.csv", audio_cache_mb=1.5)
    assert validate(bad, skip_bad=True).audio_cache_mb == 1.5
