from __future__ import annotations

from dataclasses import dataclass

import pytest

from bench.cache import Cache, atomic_path, atomic_write_text, config_hash, file_hash


@dataclass
class _Slice:
    a: int = 1
    b: float = 0.5


def test_config_hash_stable_and_sensitive():
    assert config_hash({"x": 1, "y": 2}) == config_hash({"y": 2, "x": 1})
    assert config_hash({"x": 1}) == config_hash({"x": 1.0})
    assert config_hash(_Slice()) == config_hash({"a": 1, "b": 0.5})
    assert config_hash(_Slice()) != config_hash(_Slice(b=0.6))


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_stage_done_marker(tmp_path):
    c = Cache(tmp_path)
    assert not c.is_done("pse", "k")
    c.mark_done("pse", "k", {"steps": 3})
    assert c.is_done("pse", "k") and c.read_meta("pse", "k") == {"steps": 3}


def test_file_hash_changes_with_content(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "w.bin").write_bytes(b"abc")
    h1 = file_hash(d)
    (d / "w.bin").write_bytes(b"abd")
    assert file_hash(d) != h1
