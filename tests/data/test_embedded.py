"""Embedded corpus: helpers, CLI error path, and (slow) the smoke build."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bench.audio import SR
from bench.cache import Cache
from bench.data import embedded
from bench.data.sentences import sentences
from tests._data_helpers import voice


def test_sentences_deterministic():
    a, b = sentences(200), sentences(200)
    assert a == b and len(set(a)) == 200 and all(s[-1] in ".?" for s in a)


def test_perturbations():
    x = voice(120, 1.0, 0)
    y = embedded.perturb(x, "speed", 1.25)
    assert abs(len(y) - len(x) / 1.25) < 5
    if shutil.which("sox"):
        z = embedded.perturb(x, "pitch", 300)
        assert abs(len(z) - len(x)) < 0.01 * SR
    with pytest.raises(ValueError, match="choices"):
        embedded.perturb(x, "robot", 1.0)
    t = embedded._trim(np.concatenate([np.zeros(SR), x, np.zeros(SR)]))
    assert len(t) < len(x) + 0.2 * SR


@pytest.mark.skipif(not shutil.which("sox"), reason="sox not installed")
@pytest.mark.parametrize("method,value", [("pitch", 300.0), ("formant", 0.9)])
def test_sox_perturbations_are_bit_exact(method, value):
    """sox dithers 16-bit output by default (random LSBs): rebuilds must not differ."""
    x = voice(140, 1.0, 1)
    a, b = embedded.perturb(x, method, value), embedded.perturb(x, method, value)
    assert a.shape == b.shape and np.array_equal(a, b)


def test_cli_fails_cleanly_without_sources(tmp_path, monkeypatch, capsys):
    from bench.data.__main__ import main

    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="skipped unavailable sources"):
        rc = main(["build", "--size", "smoke", "--cache-dir", str(tmp_path), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err and "speakers" in err and "Traceback" not in err


def test_unknown_size(tmp_path):
    with pytest.raises(ValueError, match="choices"):
        embedded.build_embedded("huge", 0, Cache(tmp_path))


@pytest.mark.slow
def test_smoke_build(tmp_path):
    if not shutil.which("flite") and not shutil.which("espeak-ng"):
        pytest.skip("no TTS binary")
    from bench.config import CorpusConfig
    from bench.data.corpus import load_corpus

    cache = Cache(tmp_path)
    m = embedded.build_embedded("smoke", 0, cache, workers=2, quiet=True)
    assert m.is_file() and cache.is_done("corpus", embedded.corpus_key("smoke", 0))
    c = load_corpus(CorpusConfig(name="embedded", size="smoke"), cache)
    s = c.summary()
    assert s["speakers"] >= 6 and all(s[f"speakers_{k}"] >= 1 for k in ("train", "val", "test"))
    for u in c.utterances[:5]:
        x = c.audio(u.utt_id)
        assert x.dtype == np.float32 and abs(len(x) / SR - u.duration_s) < 0.01
    assert embedded.build_embedded("smoke", 0, cache) == m  # rebuild is a no-op
    # the same mixtures bit for bit when the decoded audio is held to a fraction of the corpus
    from bench.config import MixConfig
    from bench.data.corpus import Corpus
    from bench.data.mix import MixtureSampler

    bounded = Corpus(c.root, c.manifest_path, list(c.utterances), noise_files=c.noise_files, audio_cache_mb=0.5)
    c.set_audio_cache_mb(None)
    a, b = MixtureSampler(c, "train", MixConfig(), 0), MixtureSampler(bounded, "train", MixConfig(), 0)
    for k in range(20):
        x, y = a.batch(np.random.default_rng(k), 4), b.batch(np.random.default_rng(k), 4)
        assert all(np.array_equal(x[f].numpy(), y[f].numpy()) for f in ("mixture", "target", "enrollment"))
        assert bounded.audio_cache_stats()["nbytes"] <= 0.5 * 2**20
