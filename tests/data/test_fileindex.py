"""Manifest start-up helpers: resolved paths as realpath gives them, remembered audio headers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from bench import registry
from bench.cache import Cache
from bench.config import CorpusConfig
from bench.data import loaders
from bench.data.fileindex import AudioInfoIndex, Resolver
from tests._data_helpers import voice


def test_the_resolver_gives_what_path_resolve_gives(tmp_path, monkeypatch):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "a.wav").write_bytes(b"x")
    (tmp_path / "real" / "b.wav").write_bytes(b"y")
    os.symlink(tmp_path / "real" / "sub", tmp_path / "dirlink")
    os.symlink(tmp_path / "real" / "b.wav", tmp_path / "real" / "sub" / "filelink.wav")
    os.symlink("../b.wav", tmp_path / "real" / "sub" / "rel.wav")
    monkeypatch.chdir(tmp_path / "real")
    r = Resolver()
    cases = [tmp_path / "dirlink" / "a.wav", tmp_path / "dirlink" / "filelink.wav", tmp_path / "dirlink" / "rel.wav",
             tmp_path / "dirlink" / ".." / "b.wav", tmp_path / "dirlink" / "missing.wav", Path("sub/a.wav"),
             Path("sub/../b.wav"), tmp_path / "real" / "sub" / ".", tmp_path / "dirlink" / "a.wav"]
    for p in cases:
        assert r(p) == str(Path(p).resolve()), p


def test_headers_are_read_once_while_the_files_are_unchanged(tmp_path, monkeypatch):
    rows = ["path,speaker"]
    for s in range(4):
        for k in range(2):
            sf.write(str(tmp_path / f"s{s}_{k}.wav"), voice(100 + 30 * s, 0.6, k), 16000)
            rows.append(f"s{s}_{k}.wav,sp{s}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cfg, cache = CorpusConfig(name="manifest", path=str(tmp_path / "m.csv")), Cache(tmp_path / "cache")
    load = registry.get("dataset", "manifest")
    first = load(cfg, cache)
    opened = []
    real_info = sf.info
    monkeypatch.setattr(sf, "info", lambda p, *a, **k: opened.append(p) or real_info(p, *a, **k))
    again = load(cfg, cache)
    assert opened == [] and again.key == first.key
    assert [vars(u) for u in again.utterances] == [vars(u) for u in first.utterances]
    # a file written again (another length) is read again; the others are not
    sf.write(str(tmp_path / "s0_0.wav"), np.zeros(16000 * 2, np.float32), 16000)
    changed = load(cfg, cache)
    assert [Path(p).name for p in opened] == ["s0_0.wav"]
    assert abs(changed.utt("sp0-s0_0").duration_s - 2.0) < 1e-9 and changed.key != first.key


def test_a_damaged_index_only_costs_reading_again(tmp_path):
    idx = AudioInfoIndex(tmp_path)
    idx.put("/x.wav", [1, 2, 3, 4], 16000, 800)
    idx.save()
    assert AudioInfoIndex(tmp_path).get("/x.wav", [1, 2, 3, 4]) == (16000, 800)
    assert AudioInfoIndex(tmp_path).get("/x.wav", [1, 2, 3, 5]) is None
    idx.path.write_text("{not json")
    assert AudioInfoIndex(tmp_path).get("/x.wav", [1, 2, 3, 4]) is None
    assert loaders.AudioInfoIndex is AudioInfoIndex
