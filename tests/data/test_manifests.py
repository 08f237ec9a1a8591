"""Lhotse and NeMo manifests read into the same corpus as the equivalent CSV manifest."""

from __future__ import annotations

import gzip
import json
import sys
from dataclasses import asdict

import numpy as np
import pytest
import soundfile as sf

from bench import registry
from bench.cache import Cache
from bench.config import CorpusConfig, ExperimentConfig
from tests._data_helpers import voice

SPEAKERS = 5
SPLIT = {0: "train", 1: "train", 2: "train", 3: "val", 4: "test"}


def _audio(tmp_path) -> list[tuple[str, str, str, str]]:
    """Audio files (one 22.05 kHz FLAC among 16 kHz WAVs): ``(relative path, speaker, text, split)``."""
    out = []
    for s in range(SPEAKERS):
        for k in range(2):
            rate, ext = (22050, "flac") if (s, k) == (1, 1) else (16000, "wav")
            rel = f"audio/s{s}/u{k}.{ext}"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(tmp_path / rel), voice(100 + 30 * s, 0.7 + 0.1 * k, 10 * s + k, sr=rate), rate)
            out.append((rel, f"sp{s}", f"words {s} {k}", SPLIT[s]))
    return out


def _csv(tmp_path, files, with_split: bool):
    head = "path,speaker,text" + (",split" if with_split else "")
    rows = [f"{p},{spk},{txt}" + (f",{sp}" if with_split else "") for p, spk, txt, sp in files]
    (tmp_path / "m.csv").write_text("\n".join([head, *rows]) + "\n")
    return tmp_path / "m.csv"


def _load(name: str, path, cache):
    return registry.get("dataset", name)(CorpusConfig(name=name, path=str(path)), cache)


def _same_corpus(a, b) -> None:
    assert [asdict(u) for u in a.utterances] == [asdict(u) for u in b.utterances]
    assert a.key == b.key
    for u in a.utterances:
        np.testing.assert_array_equal(a.audio(u.utt_id), b.audio(u.utt_id))


def _lhotse_sets(tmp_path, files, with_split: bool):
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs, sups = [], []
    for i, (rel, spk, txt, split) in enumerate(files):
        rec = Recording.from_file(tmp_path / rel, recording_id=f"rec{i}")
        recs.append(rec)
        sups.append(SupervisionSegment(id=f"sup{i}", recording_id=rec.id, start=0.0, duration=rec.duration,
                                       text=txt, speaker=spk, custom={"split": split} if with_split else None))
    return RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups)


@pytest.mark.parametrize("with_split", [False, True])
def test_lhotse_cuts_and_recording_supervision_pairs_are_the_csv_corpus(tmp_path, with_split):
    from lhotse import CutSet

    files = _audio(tmp_path)
    cache = Cache(tmp_path / "cache")
    csv = _load("manifest", _csv(tmp_path, files, with_split), cache)
    recs, sups = _lhotse_sets(tmp_path, files, with_split)
    d = tmp_path / "lhotse"
    d.mkdir()
    recs.to_file(d / "demo_recordings_all.jsonl.gz")
    sups.to_file(d / "demo_supervisions_all.jsonl.gz")
    CutSet.from_manifests(recordings=recs, supervisions=sups).to_file(d / "demo_cuts_all.jsonl.gz")
    for f in ("demo_cuts_all.jsonl.gz", "demo_recordings_all.jsonl.gz", "demo_supervisions_all.jsonl.gz"):
        _same_corpus(_load("lhotse", d / f, cache), csv)
    if with_split:
        assert csv.speakers("test") == ["sp4"] and csv.speakers("val") == ["sp3"]


@pytest.mark.parametrize("field", ["label", "speaker"])
def test_a_nemo_manifest_is_the_csv_corpus(tmp_path, field):
    files = _audio(tmp_path)
    cache = Cache(tmp_path / "cache")
    for with_split in (False, True):
        csv = _load("manifest", _csv(tmp_path, files, with_split), cache)
        lines = []
        for rel, spk, txt, split in files:
            info = sf.info(str(tmp_path / rel))
            row = {"audio_filepath": rel, "duration": info.frames / info.samplerate, "offset": 0.0, field: spk, "text": txt}
            if with_split:
                row["split"] = split
            lines.append(json.dumps(row))
        (tmp_path / "nemo.json").write_text("\n".join(lines) + "\n\n")
        _same_corpus(_load("nemo", tmp_path / "nemo.json", cache), csv)
        with gzip.open(tmp_path / "nemo.jsonl.gz", "wt") as fh:  # gzipped, absolute paths
            fh.write("\n".join(json.dumps({**json.loads(x), "audio_filepath": str(tmp_path / json.loads(x)["audio_filepath"])})
                               for x in lines))
        _same_corpus(_load("nemo", tmp_path / "nemo.jsonl.gz", cache), csv)


def test_the_new_datasets_are_registered_and_configurable(tmp_path):
    assert {"lhotse", "nemo"} <= set(registry.names("dataset"))
    cfg = ExperimentConfig.from_dict({"corpus": {"name": "nemo", "path": str(tmp_path / "x.json")}})
    assert cfg.corpus.name == "nemo"


def test_segments_and_speakerless_rows_are_refused_or_left_out(tmp_path, caplog):
    from lhotse import CutSet, RecordingSet, SupervisionSegment, SupervisionSet

    files = _audio(tmp_path)
    cache = Cache(tmp_path / "cache")
    recs, sups = _lhotse_sets(tmp_path, files, False)
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups)
    part = CutSet.from_cuts([c.truncate(duration=0.3) if i == 0 else c for i, c in enumerate(cuts)])
    part.to_file(tmp_path / "part_cuts.jsonl")
    with pytest.raises(ValueError, match="whole files"):
        _load("lhotse", tmp_path / "part_cuts.jsonl", cache)
    two = SupervisionSet.from_segments([*sups, SupervisionSegment("x", "rec0", 0.0, 0.3, speaker="other")])
    RecordingSet.from_recordings(recs).to_file(tmp_path / "two_recordings.jsonl")
    two.to_file(tmp_path / "two_supervisions.jsonl")
    with pytest.raises(ValueError, match="supervisions of 2 speakers"):
        _load("lhotse", tmp_path / "two_recordings.jsonl", cache)
    keep = [s for s in sups if s.recording_id != "rec0"]
    SupervisionSet.from_segments(keep).to_file(tmp_path / "few_supervisions.jsonl")
    recs.to_file(tmp_path / "few_recordings.jsonl")
    with caplog.at_level("WARNING", logger="bench"):
        c = _load("lhotse", tmp_path / "few_recordings.jsonl", cache)
    assert len(c) == len(files) - 1 and "without a speaker" in caplog.text
    recs.to_file(tmp_path / "lonely.jsonl")
    with pytest.raises(ValueError, match="cannot be found"):
        _load("lhotse", tmp_path / "lonely.jsonl", cache)

    rel = files[0][0]
    for row, match in (({"audio_filepath": rel, "label": "a", "offset": 0.2}, "offset"),
                       ({"audio_filepath": rel, "label": "a", "duration": 0.2}, "part of it"),
                       ({"audio_filepath": rel}, "no speaker"),
                       ({"label": "a"}, "no audio_filepath")):
        (tmp_path / "bad.json").write_text(json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=match):
            _load("nemo", tmp_path / "bad.json", cache)
    (tmp_path / "bad.json").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        _load("nemo", tmp_path / "bad.json", cache)
    (tmp_path / "bad.json").write_text(json.dumps({"audio_filepath": "nope.wav", "label": "a"}) + "\n")
    with pytest.raises(FileNotFoundError, match="line 1: audio file"):
        _load("nemo", tmp_path / "bad.json", cache)


def test_without_lhotse_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "cuts.jsonl").write_text("")
    monkeypatch.setitem(sys.modules, "lhotse", None)  # import lhotse -> ImportError
    with pytest.raises(ImportError, match="pip install lhotse"):
        _load("lhotse", tmp_path / "cuts.jsonl", Cache(tmp_path / "cache"))
