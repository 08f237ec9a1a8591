"""Bad data is caught once, at the door: one message naming files/speakers, or one warning."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bench.audio import SR
from bench.cache import Cache
from bench.data.corpus import Corpus, Utterance, write_manifest
from bench.data.validate import CorpusError, problems, validate

from ._data_helpers import make_corpus


def _with(tmp_path, extra: list[tuple[str, np.ndarray | bytes, str, str]]):
    corpus = make_corpus(tmp_path, n_speakers=8, n_utts=3, derived=False)
    utts = list(corpus.utterances)
    for uid, data, spk, split in extra:
        path = tmp_path / "audio" / f"{uid}.wav"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            sf.write(str(path), data, SR, subtype="FLOAT")
        utts.append(Utterance(uid, f"audio/{uid}.wav", spk, "x", "real", "", SR, 1.0, split))
    write_manifest(tmp_path / "manifest.csv", utts)
    return Corpus(tmp_path, tmp_path / "manifest.csv")


def test_clean_corpus_passes_and_is_remembered(tmp_path):
    corpus = make_corpus(tmp_path / "c", n_speakers=8, n_utts=3, derived=False)
    cache = Cache(tmp_path / "cache")
    assert problems(corpus) == {}
    assert validate(corpus, cache) is corpus
    assert any((tmp_path / "cache" / "validated").iterdir())


def test_every_bad_input_is_named_once(tmp_path):
    test_spk = next(u.speaker for u in make_corpus(tmp_path / "probe", 8, 3, derived=False).utterances
                    if u.split == "test")
    nan = np.full(SR, np.nan, dtype=np.float32)
    corpus = _with(tmp_path / "c", [
        ("short", np.full(int(0.09 * SR), 0.1, dtype=np.float32), test_spk, "test"),
        ("quiet", np.zeros(SR, dtype=np.float32), test_spk, "test"),
        ("nans", nan, test_spk, "test"),
        ("broken", b"RIFF not really a wave", test_spk, "test"),
        ("lonely", np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1, "solo", "test"),
    ])
    with pytest.raises(CorpusError) as err:
        validate(corpus)
    msg = str(err.value)
    for needle in ("too short", "silent", "non-finite", "unreadable", "short (", "quiet (", "nans (", "broken (",
                   "solo", "fewer than 2 usable utterances"):
        assert needle in msg, needle
    assert msg.count("nans (") == 1  # reported once


def test_skip_bad_leaves_them_out_with_one_warning(tmp_path, caplog):
    import logging

    corpus = _with(tmp_path / "c", [("quiet", np.zeros(SR, dtype=np.float32), "solo", "test")])
    with caplog.at_level(logging.WARNING, logger="bench"):
        slim = validate(corpus, skip_bad=True)
    assert "quiet" not in {u.utt_id for u in slim.utterances} and "solo" not in slim.speakers()
    assert len([r for r in caplog.records if "left out" in r.message]) == 1
    assert slim.key != corpus.key


def test_too_few_speakers_is_fatal_even_when_skipping(tmp_path):
    corpus = make_corpus(tmp_path / "c", n_speakers=3, n_utts=1, derived=False)
    with pytest.raises(CorpusError, match="usable speaker"):
        validate(corpus, skip_bad=True)
