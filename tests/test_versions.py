"""Cached stages carry a code version: changing a stage's code without bumping it must fail."""

from __future__ import annotations

from bench import versions


def test_every_stage_changed_only_with_its_version():
    msgs = versions.stale()
    assert not msgs, "\n".join(msgs)


def test_fingerprint_ignores_docstrings_but_not_code(tmp_path, monkeypatch):
    src = tmp_path / "m.py"
    monkeypatch.setattr(versions, "ROOT", tmp_path)
    monkeypatch.setitem(versions.STAGES, "toy", ("bench.versions", "RECORD", ("m.py",)))
    src.write_text('"""doc"""\n\ndef f(x):\n    """one"""\n    return x + 1  # note\n')
    a = versions.fingerprint("toy")
    src.write_text('"""other doc"""\n\ndef f(x):\n    """two"""\n    # another note\n    return x + 1\n')
    assert versions.fingerprint("toy") == a
    src.write_text('"""doc"""\n\ndef f(x):\n    return x + 2\n')
    assert versions.fingerprint("toy") != a
