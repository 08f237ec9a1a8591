"""Content-addressed artifact cache: corpora, teacher embeddings, checkpoints.

Layout: ``<root>/<stage>/<key>/`` where ``key`` is the hash of the stage's config slice.
A stage directory is complete only once its ``DONE`` marker exists; writes go through
temporary files renamed into place, so a crash never leaves a half-written artifact that a
later run would trust.

The root is, in order: the ``cache_dir`` config value, ``$PSE_KD_CACHE``, or
``~/.cache/pse-kd-bench``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

DONE = "DONE"


def default_root(cache_dir: str = "") -> Path:
    """Resolve the cache root (see module docstring)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PSE_KD_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pse-kd-bench"


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 1 and 1.0 hash alike
    return obj


def config_hash(*parts: Any, length: int = 16) -> str:
    """Stable hash of dataclasses / dicts / scalars (key order and 1 vs 1.0 do not matter)."""
    blob = json.dumps([_plain(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_hash(path: str | Path, length: int = 16) -> str:
    """SHA-256 of a file (or of all files under a directory, in sorted order)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:length]


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_plain(obj), indent=2, sort_keys=True, default=str))


class Cache:
    """Stage directories under a root, keyed by config hashes."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)

    def stage_dir(self, stage: str, key: str) -> Path:
        d = self.root / stage / key
        d.mkdir(parents=True, exist_ok=True)
        return d

    def is_done(self, stage: str, key: str) -> bool:
        return (self.root / stage / key / DONE).exists()

    def mark_done(self, stage: str, key: str, meta: dict[str, Any] | None = None) -> None:
        d = self.stage_dir(stage, key)
        atomic_write_json(d / DONE, meta or {})

    def read_meta(self, stage: str, key: str) -> dict[str, Any]:
        return json.loads((self.root / stage / key / DONE).read_text())
