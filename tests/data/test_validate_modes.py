"""corpus.validate: "header" (the default) trusts headers and decodes nothing; "decode" reads every file.

What each mode catches, that a clean corpus is the same corpus in both, and that a file damaged past
its header, which header validation lets through, stops the run with its name when it is read.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bench.audio import SR
from bench.cache import Cache
from bench.data.corpus import Corpus, Utterance, write_manifest
from bench.data.validate import CorpusError, problems, validate
from tests._data_helpers import make_corpus, voice


def _no_decoding(monkeypatch):
    """Make any whole or partial decode of an utterance fail the test."""
    def boom(*a, **k):
        raise AssertionError("header validation decoded a file")

    monkeypatch.setattr(Corpus, "_load", boom)
    monkeypatch.setattr("bench.data.corpus.read_frames", boom)


def _damaged_flac(path) -> None:
    """A FLAC file whose header (STREAMINFO) reads but whose frames do not decode."""
    sf.write(str(path), voice(140, 2.0, 3), SR, format="FLAC")
    b = bytearray(path.read_bytes())
    for i in range(len(b) // 3, len(b) // 3 + 2000):
        b[i] = 0xAB
    path.write_bytes(bytes(b))


def _with(root, extra):
    corpus = make_corpus(root, n_speakers=8, n_utts=3, derived=False)
    utts = list(corpus.utterances)
    for uid, data, spk, split, ext in extra:
        path = root / "audio" / f"{uid}.{ext}"
        if callable(data):
            data(path)
        elif isinstance(data, bytes):
            path.write_bytes(data)
        else:
            sf.write(str(path), data, SR, subtype="FLOAT")
        utts.append(Utterance(uid, f"audio/{uid}.{ext}", spk, "x", "real", "", SR, 2.0, split))
    write_manifest(root / "manifest.csv", utts)
    return Corpus(root, root / "manifest.csv")


def test_header_mode_decodes_nothing_and_passes_a_clean_corpus(tmp_path, monkeypatch):
    corpus = make_corpus(tmp_path / "c", n_speakers=8, n_utts=3, derived=False)
    cache = Cache(tmp_path / "cache")
    with monkeypatch.context() as m:
        _no_decoding(m)
        assert validate(corpus, cache, mode="header") is corpus
        assert (tmp_path / "cache" / "fileinfo" / "index.json").is_file()  # headers remembered
    # a header pass is not a decode pass: decode mode reads the files (and then header mode trusts it)
    calls = []
    real = Corpus._load
    monkeypatch.setattr(Corpus, "_load", lambda self, u: calls.append(u) or real(self, u))
    assert validate(corpus, cache, mode="decode") is corpus
    assert len(calls) == len(corpus.utterances)
    calls.clear()
    other = Cache(tmp_path / "cache")
    assert validate(corpus, other, mode="decode") is corpus and calls == []  # remembered
    _no_decoding(monkeypatch)
    assert validate(Corpus(corpus.root, corpus.manifest_path), Cache(tmp_path / "cache"), mode="header").key == corpus.key


def test_header_mode_catches_what_headers_show_and_leaves_samples_to_decode(tmp_path, monkeypatch):
    test_spk = next(u.speaker for u in make_corpus(tmp_path / "probe", 8, 3, derived=False).utterances
                    if u.split == "test")
    header_bad = [
        ("short", np.full(int(0.09 * SR), 0.1, dtype=np.float32), test_spk, "test", "wav"),
        ("hollow", np.zeros(0, dtype=np.float32), test_spk, "test", "wav"),
        ("broken", b"RIFF not really a wave", test_spk, "test", "wav"),
    ]
    sample_bad = [
        ("quiet", np.zeros(SR, dtype=np.float32), test_spk, "test", "wav"),
        ("nans", np.full(SR, np.nan, dtype=np.float32), test_spk, "test", "wav"),
        ("damaged", _damaged_flac, test_spk, "test", "flac"),
    ]
    corpus = _with(tmp_path / "c", header_bad + sample_bad)
    (tmp_path / "c" / "audio" / "short.wav").rename(tmp_path / "c" / "audio" / "gone.wav")
    _no_decoding(monkeypatch)
    found = problems(corpus, mode="header", cache=Cache(tmp_path / "cache"))
    flat = {i.split(" ")[0]: k for k, v in found.items() for i in v}
    assert flat["short"].startswith("file unreadable")  # missing: the stat fails
    assert flat["hollow"] == "file empty" and flat["broken"].startswith("file unreadable")
    assert not {"quiet", "nans", "damaged"} & set(flat)  # samples are left to decode
    monkeypatch.undo()
    (tmp_path / "c" / "audio" / "gone.wav").rename(tmp_path / "c" / "audio" / "short.wav")
    decoded = problems(corpus, mode="decode")
    flat = {i.split(" ")[0]: k for k, v in decoded.items() for i in v}
    assert flat["quiet"].startswith("file silent") and flat["nans"].startswith("file non-finite")
    assert flat["damaged"] == "file unreadable (LibsndfileError)" and flat["short"].startswith("file too short")
    assert problems(corpus, mode="header")  # too short by its header
    with pytest.raises(CorpusError, match="too short"):
        validate(corpus, mode="header")


def test_a_file_damaged_past_its_header_is_named_when_it_is_read(tmp_path):
    from bench.config import MixConfig
    from bench.data.mix import MixtureSampler

    corpus = make_corpus(tmp_path / "c", n_speakers=4, n_utts=2, derived=False)
    for u in corpus.utterances:  # every train utterance: the sampler must meet one
        if u.split == "train":
            _damaged_flac(tmp_path / "c" / u.path)
    cache = Cache(tmp_path / "cache")
    validate(corpus, cache, mode="header", eval_splits=(), train=True)  # lets it through
    bad = next(u for u in corpus.utterances if u.split == "train")
    with pytest.raises(CorpusError, match=r"cannot be decoded.*corpus\.validate=decode") as err:
        corpus.audio(bad.utt_id)
    assert str(corpus.path_of(bad.utt_id)) in str(err.value) and bad.utt_id in str(err.value)
    with pytest.raises(CorpusError, match="cannot be decoded"):  # a partial read across the damage too
        Corpus(corpus.root, corpus.manifest_path, audio_cache_mb=0).crop(bad.utt_id, 0, 2 * SR)
    sampler = MixtureSampler(corpus, "train", MixConfig(noise_types=["white"]), 0)
    with pytest.raises(CorpusError, match="cannot be decoded"):
        sampler.batch(np.random.default_rng(0), 2, 1.0)
    with pytest.raises(CorpusError, match="unreadable"):
        validate(corpus, cache, mode="decode", eval_splits=(), train=True)


def test_the_config_value_is_a_read_side_knob(tmp_path):
    from bench.cache import key_slice
    from bench.config import CORPUS_RUNTIME_FIELDS, ConfigError, CorpusConfig, ExperimentConfig

    assert CorpusConfig().validate == "header"
    base = ExperimentConfig.from_dict({})
    decode = ExperimentConfig.from_dict({"corpus": {"validate": "decode"}, "test_corpus": {"validate": "decode"}})
    assert "validate" not in base.to_dict()["corpus"] and "validate" not in base.to_dict()["test_corpus"]
    assert decode.to_dict()["corpus"]["validate"] == "decode"
    assert key_slice(base.corpus, skip=CORPUS_RUNTIME_FIELDS) == key_slice(decode.corpus, skip=CORPUS_RUNTIME_FIELDS)
    corpus = make_corpus(tmp_path / "c", n_speakers=8, n_utts=3, derived=False)
    with pytest.raises(ConfigError, match=r"test_corpus\.validate='full'.*header, decode"):
        validate(corpus, name="test_corpus", mode="full")


def test_the_pipeline_validates_by_headers_unless_asked(tmp_path, monkeypatch):
    from bench.config import CorpusConfig
    from bench.pipeline.stages import Stages

    corpus = make_corpus(tmp_path / "c", n_speakers=8, n_utts=3, derived=False)
    rows = "\n".join(f"{corpus.path_of(u.utt_id)},{u.speaker}" for u in corpus.utterances)
    (tmp_path / "m.csv").write_text("path,speaker\n" + rows + "\n")
    seen = []
    import bench.data.validate as v

    real = v.validate
    monkeypatch.setattr(v, "validate", lambda *a, **k: seen.append(k["mode"]) or real(*a, **k))
    st = Stages(Cache(tmp_path / "cache"), progress=False)
    for mode in ("header", "decode"):
        got = st.corpus(CorpusConfig(name="manifest", path=str(tmp_path / "m.csv"), validate=mode,
                                     val_speakers=0.25, test_speakers=0.25), ("val", "test"))
        assert len(got) == len(corpus)
    assert seen == ["header", "decode"]


@pytest.mark.parametrize("samples,why", [(np.full(2 * SR, np.nan, dtype=np.float32), "non-finite"),
                                         (np.zeros(2 * SR, dtype=np.float32), "silent")])
def test_nan_or_silent_audio_let_through_by_headers_stops_at_its_first_read(tmp_path, samples, why):
    from bench.config import MixConfig
    from bench.data.mix import MixtureSampler
    from bench.data.validate import BadAudio

    corpus = make_corpus(tmp_path / "c", n_speakers=4, n_utts=2, derived=False)
    for u in corpus.utterances:
        if u.split == "train":
            sf.write(str(tmp_path / "c" / u.path), samples, SR, subtype="FLOAT")
    corpus = Corpus(corpus.root, corpus.manifest_path)
    validate(corpus, Cache(tmp_path / "cache"), mode="header", eval_splits=(), train=True)
    bad = next(u for u in corpus.utterances if u.split == "train")
    with pytest.raises(BadAudio, match=rf"utterance '{bad.utt_id}'\) is {why}.*corpus\.validate=decode"):
        corpus.audio(bad.utt_id)
    with pytest.raises(BadAudio, match=why):
        MixtureSampler(corpus, "train", MixConfig(noise_types=["white"]), 0).batch(np.random.default_rng(0), 2, 1.0)
    with pytest.raises(CorpusError, match=f"file {why}"):  # decode mode names it as before
        validate(corpus, mode="decode", eval_splits=(), train=True)
