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


def test_done_marker_is_believed_only_while_artifacts_match(tmp_path, caplog):
    import logging

    from bench.cache import Cache

    c = Cache(tmp_path)
    d = c.stage_dir("eval", "k1")
    (d / "rows.csv").write_text("a,b\n1,2\n3,4\n")
    c.mark_done("eval", "k1", {"x": 1})
    assert c.is_done("eval", "k1") and c.read_meta("eval", "k1") == {"x": 1}
    fresh = Cache(tmp_path)  # a new process: nothing verified yet
    (d / "rows.csv").write_text("a,b\n1,2\n")  # truncated
    with caplog.at_level(logging.WARNING, logger="bench"):
        assert not fresh.is_done("eval", "k1")
    assert str(d / "rows.csv") in caplog.text and not (d / "DONE").exists()
    # same size, other bytes
    (d / "rows.csv").write_text("a,b\n1,2\n3,4\n")
    c.mark_done("eval", "k1")
    (d / "rows.csv").write_text("a,b\n1,2\n3,5\n")
    assert not Cache(tmp_path).is_done("eval", "k1")
    # a missing artifact and an unreadable marker
    (d / "rows.csv").write_text("x")
    c.mark_done("eval", "k1")
    (d / "rows.csv").unlink()
    assert not Cache(tmp_path).is_done("eval", "k1")
    (d / "DONE").write_text("{not json")
    assert not Cache(tmp_path).is_done("eval", "k1")


def _hold_lock(root: str, ready, release) -> None:
    from bench.cache import Cache

    with Cache(root).lock("pse", "k"):
        ready.set()
        release.wait(10)


def test_stage_lock_excludes_other_processes(tmp_path):
    import multiprocessing as mp

    import pytest
    from filelock import Timeout

    from bench.cache import Cache

    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    p.start()
    try:
        assert ready.wait(10)
        with pytest.raises(Timeout):
            with Cache(tmp_path).lock("pse", "k", timeout=0.2):
                pass
    finally:
        release.set()
        p.join(10)
    with Cache(tmp_path).lock("pse", "k", timeout=2):  # free again
        pass
