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
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

DONE = "DONE"
log = logging.getLogger("bench")


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
        later = getattr(obj, "KEY_ADDED_LATER", ())
        return _plain(key_slice(obj, added_later=later) if later else asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [v if type(v) is str else _plain(v) for v in obj]  # str leaves: no call (100k-row corpus keys)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 1 and 1.0 hash alike
    return obj


def config_hash(*parts: Any, length: int = 16) -> str:
    """Stable hash of dataclasses / dicts / scalars (key order and 1 vs 1.0 do not matter)."""
    blob = json.dumps([_plain(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def key_slice(obj: Any, added_later: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of dataclass ``obj`` for a cache key, without ``skip`` and without each field of
    ``added_later`` that is at its declared default: a field added after results were cached, whose
    default is the value the code used before, leaves those results' keys unchanged."""
    from dataclasses import MISSING, fields

    out: dict[str, Any] = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if f.name in skip:
            continue
        if f.name in added_later:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if v == default:
                continue
        out[f.name] = v
    return out


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


def file_stamp(path: str | Path) -> list[int]:
    """What tells that a file is unchanged without reading it: its size and mtime, and what
    ``touch -r`` cannot set back: the inode's change time (ctime) and the inode (a file replaced
    by another one). Within one tick of the file-system clock (a few ms) a change can go unseen."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


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
    """Stage directories under a root, keyed by config hashes.

    ``mark_done`` records the size and SHA-256 of the stage's artifacts in its ``DONE`` marker;
    ``is_done`` believes a marker only while every recorded file is there with those bytes. A
    missing, truncated or altered artifact (or an unreadable marker) is reported once, with its
    path, and the stage counts as not done, so it is computed again.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self._verified: set[tuple[str, str]] = set()

    def stage_dir(self, stage: str, key: str) -> Path:
        d = self.root / stage / key
        d.mkdir(parents=True, exist_ok=True)
        return d

    def is_done(self, stage: str, key: str) -> bool:
        d = self.root / stage / key
        if (stage, key) in self._verified:
            if (d / DONE).exists():
                return True
            self._verified.discard((stage, key))
        if not (d / DONE).exists():
            return False
        problem = self._check(d)
        if problem:
            log.warning("cache: %s; recomputing %s/%s", problem, stage, key)
            (d / DONE).unlink(missing_ok=True)
            return False
        self._verified.add((stage, key))
        return True

    @staticmethod
    def _check(d: Path) -> str:
        """Why the artifacts of stage dir ``d`` cannot be trusted ("" when they can)."""
        try:
            meta = json.loads((d / DONE).read_text())
        except (OSError, ValueError) as exc:
            return f"marker {d / DONE} is unreadable ({type(exc).__name__})"
        for name, (size, digest) in (meta.get("_files") or {}).items() if isinstance(meta, dict) else ():
            f = d / name
            if not f.is_file():
                return f"artifact {f} is missing"
            if f.stat().st_size != size:
                return f"artifact {f} has {f.stat().st_size} bytes, {size} were written"
            if file_hash(f, 64) != digest:
                return f"artifact {f} does not match its checksum"
        return ""

    def mark_done(self, stage: str, key: str, meta: dict[str, Any] | None = None, verify: bool = True) -> None:
        """Mark a stage complete. With ``verify`` the size and SHA-256 of every file in its directory
        (not ``DONE``, temporary files or ``ckpt.pt`` resume checkpoints) are recorded."""
        d = self.stage_dir(stage, key)
        meta = dict(meta or {})
        if verify:
            meta["_files"] = {
                f.name: [f.stat().st_size, file_hash(f, 64)]
                for f in sorted(d.iterdir())
                if f.is_file() and f.name not in (DONE, "ckpt.pt") and not f.name.startswith(".")
            }
        atomic_write_json(d / DONE, meta)
        self._verified.add((stage, key))

    def lock(self, stage: str, key: str, timeout: float = -1):
        """An inter-process lock on one stage (``filelock``; a context manager): workers sharing a
        cache never compute the same stage twice and never read it half-written."""
        from filelock import FileLock

        return FileLock(str(self.stage_dir(stage, key) / ".lock"), timeout=timeout)

    def read_meta(self, stage: str, key: str) -> dict[str, Any]:
        meta = json.loads((self.root / stage / key / DONE).read_text())
        meta.pop("_files", None)
        return meta
