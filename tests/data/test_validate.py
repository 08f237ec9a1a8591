"""Bad data is caught once, at the door: one message naming files/speakers, or one warning."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bench.audio import SR
from bench.cache import Cache
from bench.data.corpus import Corpus, Utterance, write_manifest
from bench.data.validate import CorpusError, problems, validate
from tests._data_helpers import make_corpus


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


def test_a_file_listed_twice_is_refused_and_a_lone_speaker_listed_twice_is_not_usable(tmp_path):
    corpus = make_corpus(tmp_path / "c", n_speakers=8, n_utts=3, derived=False)
    test_utt = next(u for u in corpus.utterances if u.split == "test")
    sf.write(str(tmp_path / "c" / "audio" / "solo.wav"),
             np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1, SR, subtype="FLOAT")
    utts = [*corpus.utterances,
            Utterance("solo_a", "audio/solo.wav", "solo", "x", "real", "", SR, 1.0, "test"),
            Utterance("solo_b", str(tmp_path / "c" / "audio" / "solo.wav"), "solo", "x", "real", "", SR, 1.0, "test"),
            Utterance(test_utt.utt_id + "_again", test_utt.path, test_utt.speaker, "x", "real", "", SR, 1.0, "test")]
    write_manifest(tmp_path / "c" / "manifest.csv", utts)
    twice = Corpus(tmp_path / "c", tmp_path / "c" / "manifest.csv")
    with pytest.raises(CorpusError) as err:
        validate(twice, Cache(tmp_path / "cache"))
    msg = str(err.value)
    assert "2 x file listed more than once (it could enroll and be the target of one mixture)" in msg and "solo_b (" in msg and f"as {test_utt.utt_id})" in msg
    assert "fewer than 2 usable utterances (enrollment + test target): solo" in msg
    # skip_bad keeps each file once, under its first id; the lone speaker goes
    slim = validate(twice, skip_bad=True)
    paths = [slim.path_of(u.utt_id).resolve() for u in slim.utterances]
    assert len(paths) == len(set(paths)) == len(corpus.utterances)
    assert test_utt.utt_id in {u.utt_id for u in slim.utterances} and "solo" not in slim.speakers()


def test_a_manifest_listing_every_row_twice_is_refused(tmp_path):
    from bench import registry
    from bench.config import CorpusConfig

    corpus = make_corpus(tmp_path / "c", n_speakers=6, n_utts=2, derived=False)
    rows = [f"{u.path},{u.speaker}" for u in corpus.utterances]
    (tmp_path / "c" / "m.csv").write_text("path,speaker\n" + "\n".join(rows + rows) + "\n")
    cache = Cache(tmp_path / "cache")
    loaded = registry.get("dataset", "manifest")(CorpusConfig(name="manifest", path=str(tmp_path / "c" / "m.csv")),
                                                 cache)
    with pytest.raises(CorpusError, match=f"{len(rows)} x file listed more than once"):
        validate(loaded, cache)


def test_the_hint_names_the_test_corpus_key(tmp_path):
    corpus = _with(tmp_path / "c", [("quiet", np.zeros(SR, dtype=np.float32), "solo", "test")])
    with pytest.raises(CorpusError) as err:
        validate(corpus, name="test_corpus", eval_splits=("test",), train=False)
    assert "set test_corpus.skip_bad=true to leave them out" in str(err.value)
