"""Corpus records, manifest I/O, speaker-disjoint splits, registry dispatch."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import registry
from bench.audio import SR
from bench.cache import Cache
from bench.data.corpus import (
    Corpus,
    Utterance,
    assign_splits,
    load_corpus,
    read_manifest,
    resplit,
    write_manifest,
)
from tests._data_helpers import make_corpus


def test_registry_lists_all_datasets():
    assert {"embedded", "librispeech", "voxceleb", "manifest"} <= set(registry.names("dataset"))


def test_manifest_round_trip(tmp_path):
    utts = [
        Utterance("b", "audio/b.wav", "s1", "flite:slt", "tts", "BSD", 16000, 2.5, "val", "hi, there", ""),
        Utterance("a", "audio/a.wav", "s1__p+300", "x", "derived", "GPL", 8000, 1.0, "val", "", "s1"),
    ]
    write_manifest(tmp_path / "m.csv", utts)
    back = read_manifest(tmp_path / "m.csv")
    assert [asdict(u) for u in back] == [asdict(u) for u in sorted(utts, key=lambda u: u.utt_id)]


def test_corpus_api(tmp_path):
    c = make_corpus(tmp_path)
    assert c.root == tmp_path and c.manifest_path.is_file() and len(c.key) == 16
    spk = c.speakers()
    assert spk == sorted(spk) and len(spk) == 11
    assert set(c.speakers("train")) | set(c.speakers("val")) | set(c.speakers("test")) == set(spk)
    u = c.utts_of("spk01")[0]
    x = c.audio(u.utt_id)
    assert x.dtype == np.float32 and x.ndim == 1 and abs(len(x) / SR - u.duration_s) < 0.01
    assert c.audio(u.utt_id) is x  # memoised
    assert len(c.noise_files) == 1 and c.noise(0).dtype == np.float32
    with pytest.raises(ValueError, match="unknown split"):
        c.speakers("dev")
    s = c.summary()
    assert s["speakers_derived"] == 3 and s["speakers"] == 11


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_spk=st.integers(3, 40))
def test_split_disjoint_and_derived_with_parent(seed, n_spk):
    utts = []
    for s in range(n_spk):
        for k in range(2):
            utts.append(Utterance(f"s{s}_{k}", "x.wav", f"s{s}", kind="real" if s % 4 == 0 else "tts"))
        if s % 2 == 0:
            utts.append(Utterance(f"s{s}d_0", "x.wav", f"s{s}__d", kind="derived", parent_speaker=f"s{s}"))
            utts.append(Utterance(f"s{s}dd_0", "x.wav", f"s{s}__dd", kind="derived", parent_speaker=f"s{s}__d"))
    mapping = assign_splits(utts, 0.15, 0.2, seed)
    for u in utts:  # one split per speaker
        assert mapping[u.speaker] == u.split
    for u in utts:
        if u.parent_speaker:
            assert mapping[u.speaker] == mapping[u.parent_speaker]
    if n_spk >= 10:
        assert all(any(v == s for v in mapping.values()) for s in ("train", "val", "test"))
    # deterministic and order-independent
    shuffled = [Utterance(**asdict(u)) for u in reversed(utts)]
    assert assign_splits(shuffled, 0.15, 0.2, seed) == mapping


def test_resplit_and_key(tmp_path):
    c = make_corpus(tmp_path)
    c2 = resplit(c, 0.25, 0.25, 0)
    assert c2.key == c.key  # same seed and fractions as the build -> same split, same key
    c3 = resplit(c, 0.3, 0.3, 5)
    m1 = {u.speaker: u.split for u in c.utterances}
    m3 = {u.speaker: u.split for u in c3.utterances}
    assert (c3.key != c.key) == (m3 != m1)
    assert m3["spk00__s1.10"] == m3["spk00"]


def test_load_corpus_dispatches(tmp_path):
    from bench.config import CorpusConfig

    calls = []

    @registry.register("dataset", "_test_fake")
    def fake(cfg, cache):
        calls.append(cfg.name)
        return Corpus(tmp_path, tmp_path / "manifest.csv")

    make_corpus(tmp_path)
    c = load_corpus(CorpusConfig(name="_test_fake"), Cache(tmp_path / "cache"))
    assert calls == ["_test_fake"] and isinstance(c, Corpus)
    with pytest.raises(KeyError, match="registered datasets"):
        load_corpus(CorpusConfig(name="nope"), Cache(tmp_path / "cache"))


def test_content_stamp_changes_key_with_audio_bytes(tmp_path):
    from bench.audio import load, save
    from bench.data.corpus import CONTENT_STAMP, write_content_stamp

    c = make_corpus(tmp_path)
    plain = c.key
    write_content_stamp(c.manifest_path, c.utterances)
    stamped = Corpus(tmp_path, c.manifest_path)
    assert (tmp_path / CONTENT_STAMP).is_file() and stamped.key != plain
    assert Corpus(tmp_path, c.manifest_path).key == stamped.key  # deterministic
    # Change one file's last bits (what a dithering sox did): same manifest, another corpus.
    u = c.utterances[0]
    x = load(tmp_path / u.path)
    x[100] += 2.0 / 32768
    save(tmp_path / u.path, x)
    write_content_stamp(c.manifest_path, c.utterances)
    assert Corpus(tmp_path, c.manifest_path).key != stamped.key
