"""Real-corpus loaders on tiny generated fixtures (any rate in -> 16 kHz out)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bench import registry
from bench.audio import SR
from bench.cache import Cache
from bench.config import CorpusConfig
from tests._data_helpers import voice


def _write(path, sr, seconds=0.6, f0=120.0, seed=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), voice(f0, seconds, seed, sr=sr), sr, format=fmt)


def _check(corpus, n_spk, sr_in):
    assert len(corpus.speakers()) == n_spk
    splits = {}
    for u in corpus.utterances:
        assert u.native_sample_rate == sr_in
        splits.setdefault(u.speaker, set()).add(u.split)
        x = corpus.audio(u.utt_id)
        assert x.dtype == np.float32 and abs(len(x) - round(u.duration_s * SR)) <= 2
    assert all(len(s) == 1 for s in splits.values())  # speaker-disjoint
    assert len({next(iter(s)) for s in splits.values()}) == 3


def test_librispeech_layout(tmp_path):
    root = tmp_path / "LibriSpeech" / "dev-clean"
    for s in range(6):
        lines = []
        for k in range(2):
            uid = f"{100 + s}-7-{k:04d}"
            _write(root / str(100 + s) / "7" / f"{uid}.flac", 8000, f0=100 + 20 * s, seed=k)
            lines.append(f"{uid} HELLO WORLD {k}")
        (root / str(100 + s) / "7" / f"{100 + s}-7.trans.txt").write_text("\n".join(lines) + "\n")
    cache = Cache(tmp_path / "cache")
    c = registry.get("dataset", "librispeech")(CorpusConfig(name="librispeech", path=str(tmp_path / "LibriSpeech")), cache)
    _check(c, 6, 8000)
    assert c.utt("100-7-0001").text == "HELLO WORLD 1"
    assert len(list((tmp_path / "cache" / "resampled").glob("*.wav"))) == len(c)
    c2 = registry.get("dataset", "librispeech")(CorpusConfig(name="librispeech", path=str(tmp_path / "LibriSpeech")), cache)
    np.testing.assert_array_equal(c2.audio("100-7-0001"), c.audio("100-7-0001"))
    assert c2.key == c.key


def test_voxceleb_layout(tmp_path):
    root = tmp_path / "vox" / "wav"
    for s in range(5):
        for v in range(2):
            _write(root / f"id1000{s}" / f"vid{v}" / "00001.wav", 22050, f0=90 + 25 * s, seed=v)
    c = registry.get("dataset", "voxceleb")(CorpusConfig(name="voxceleb", path=str(tmp_path / "vox")), Cache(tmp_path / "cache"))
    _check(c, 5, 22050)
    assert c.speakers()[0] == "id10000"


def test_manifest_layout(tmp_path):
    rows = ["path,speaker,text"]
    for s in range(5):
        for k in range(2):
            rel = f"a/s{s}_{k}.wav"
            _write(tmp_path / rel, 44100, f0=100 + 30 * s, seed=k)
            rows.append(f"{rel},sp{s},text {k}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cfg = CorpusConfig(name="manifest", path=str(tmp_path / "m.csv"))
    c = registry.get("dataset", "manifest")(cfg, Cache(tmp_path / "cache"))
    _check(c, 5, 44100)
    # a given split column is kept
    rows2 = ["path,speaker,split"] + [f"a/s{s}_0.wav,sp{s},{'train' if s < 3 else 'test'}" for s in range(5)]
    (tmp_path / "m2.csv").write_text("\n".join(rows2) + "\n")
    c2 = registry.get("dataset", "manifest")(CorpusConfig(name="manifest", path=str(tmp_path / "m2.csv")), Cache(tmp_path / "cache"))
    assert c2.speakers("test") == ["sp3", "sp4"] and c2.speakers("val") == []


def test_loader_errors(tmp_path):
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ValueError, match="corpus.path is empty"):
        registry.get("dataset", "manifest")(CorpusConfig(name="manifest"), cache)
    with pytest.raises(FileNotFoundError):
        registry.get("dataset", "librispeech")(CorpusConfig(name="librispeech", path=str(tmp_path / "nope")), cache)
    (tmp_path / "bad.csv").write_text("file,who\nx.wav,a\n")
    with pytest.raises(ValueError, match="lacks column"):
        registry.get("dataset", "manifest")(CorpusConfig(name="manifest", path=str(tmp_path / "bad.csv")), cache)


def test_replaced_audio_is_another_corpus(tmp_path):
    """A user corpus is content-addressed: the same paths and durations with other bytes give
    another key and freshly resampled audio (the cache never serves the old files' results)."""
    rows = ["path,speaker"]
    for s in range(4):
        for k in range(2):
            _write(tmp_path / f"w/s{s}_{k}.wav", 22050, f0=100 + 30 * s, seed=k)
            rows.append(f"w/s{s}_{k}.wav,sp{s}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cfg = CorpusConfig(name="manifest", path=str(tmp_path / "m.csv"))
    cache = Cache(tmp_path / "cache")
    load = registry.get("dataset", "manifest")
    a = load(cfg, cache)
    before = a.audio("sp0-s0_0")
    assert load(cfg, cache).key == a.key  # unchanged files: same key (size + mtime fast path)
    noise = np.random.default_rng(0).standard_normal(len(sf.read(str(tmp_path / "w/s0_0.wav"))[0])) * 0.1
    sf.write(str(tmp_path / "w/s0_0.wav"), noise.astype(np.float32), 22050)
    b = load(cfg, cache)
    assert b.key != a.key
    after = b.audio("sp0-s0_0")
    assert after.shape == before.shape and not np.allclose(after, before)


def _user_corpus(tmp_path, sr: int = 22050):
    rows = ["path,speaker"]
    for s in range(4):
        for k in range(2):
            _write(tmp_path / f"w/s{s}_{k}.wav", sr, f0=100 + 30 * s, seed=k)
            rows.append(f"w/s{s}_{k}.wav,sp{s}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return CorpusConfig(name="manifest", path=str(tmp_path / "m.csv"))


def test_audio_changed_in_place_with_its_mtime_set_back_is_another_corpus(tmp_path):
    """``touch -r`` restores size and mtime but not the inode's change time: the file is hashed
    again, so the key changes and the resampled copy is made again."""
    import os
    import time

    cfg, cache = _user_corpus(tmp_path), Cache(tmp_path / "cache")
    load = registry.get("dataset", "manifest")
    a = load(cfg, cache)
    before = a.audio("sp0-s0_0")
    path = tmp_path / "w/s0_0.wav"
    st = os.stat(path)
    time.sleep(0.05)  # an edit comes later than the file-system clock's tick
    x = sf.read(str(path), dtype="float32")[0]
    sf.write(str(path), (x[::-1] * 0.5).astype(np.float32), 22050)  # same length, format and size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    b = load(cfg, cache)
    assert b.key != a.key
    after = b.audio("sp0-s0_0")
    assert after.shape == before.shape and not np.allclose(after, before)
    assert load(cfg, Cache(tmp_path / "fresh")).key == b.key  # what a fresh cache says


def test_the_content_key_of_unchanged_files_survives_the_stamp_format(tmp_path):
    """An index written with size and mtime only is hashed again, to the same key (the shipped
    zoo's stage keys include the corpus key)."""
    import json

    cfg, cache = _user_corpus(tmp_path), Cache(tmp_path / "cache")
    load = registry.get("dataset", "manifest")
    key = load(cfg, cache).key
    index_path = tmp_path / "cache" / "filehash" / "index.json"
    index = json.loads(index_path.read_text())
    assert all(len(rec) == 5 for rec in index.values())
    index_path.write_text(json.dumps({k: rec[:3] for k, rec in index.items()}))  # the older format
    assert load(cfg, cache).key == key
    assert all(len(rec) == 5 for rec in json.loads(index_path.read_text()).values())


def _rows(tmp_path) -> list[str]:
    rows = []
    for s in range(4):
        for k in range(2):
            _write(tmp_path / f"w/s{s}_{k}.wav", 16000, f0=100 + 30 * s, seed=k)
            rows.append(f"w/s{s}_{k}.wav,sp{s},t{k}")
    return rows


def test_a_manifest_with_a_byte_order_mark_is_read(tmp_path):
    (tmp_path / "m.csv").write_bytes(("\ufeffpath,speaker,text\n" + "\n".join(_rows(tmp_path)) + "\n").encode())
    c = registry.get("dataset", "manifest")(CorpusConfig(name="manifest", path=str(tmp_path / "m.csv")),
                                            Cache(tmp_path / "cache"))
    assert len(c) == 8 and c.speakers() == ["sp0", "sp1", "sp2", "sp3"]


def test_a_latin1_manifest_names_the_file_and_the_row(tmp_path):
    rows = _rows(tmp_path)
    rows[4] = rows[4].replace("t0", "caf\xe9")
    (tmp_path / "m.csv").write_bytes(("path,speaker,text\n" + "\n".join(rows) + "\n").encode("latin-1"))
    with pytest.raises(ValueError) as err:
        registry.get("dataset", "manifest")(CorpusConfig(name="manifest", path=str(tmp_path / "m.csv")),
                                            Cache(tmp_path / "cache"))
    assert str(err.value) == f"manifest {tmp_path / 'm.csv'} row 6 is not UTF-8 (byte 0xe9); save the file as UTF-8"


def test_an_empty_wav_is_one_line_naming_it_or_left_out_with_skip_bad(tmp_path, caplog):
    import logging

    from bench.config import TestCorpusConfig
    from bench.data.validate import CorpusError, validate

    (tmp_path / "w").mkdir()
    (tmp_path / "w/empty.wav").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,speaker\n" + "\n".join([*_rows(tmp_path), "w/empty.wav,sp0"]) + "\n")
    load, cache = registry.get("dataset", "manifest"), Cache(tmp_path / "cache")
    with pytest.raises(CorpusError) as err:
        load(CorpusConfig(name="manifest", path=str(tmp_path / "m.csv")), cache)
    msg = str(err.value)
    assert "\n" not in msg and f"row 10: audio file {str(tmp_path / 'w/empty.wav')!r} is empty (0 bytes)" in msg
    assert "set corpus.skip_bad=true" in msg
    with pytest.raises(CorpusError, match="set test_corpus.skip_bad=true"):
        load(TestCorpusConfig(name="manifest", path=str(tmp_path / "m.csv")), cache)
    corpus = load(CorpusConfig(name="manifest", path=str(tmp_path / "m.csv"), skip_bad=True), cache)
    with caplog.at_level(logging.WARNING, logger="bench"):
        slim = validate(corpus, skip_bad=True, eval_splits=(None,), train=False)
    assert len(slim) == 8 and not any(u.path.endswith("empty.wav") for u in slim.utterances)
    assert "unreadable" in caplog.text
