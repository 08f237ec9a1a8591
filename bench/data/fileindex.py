"""What reading a large manifest needs per file, cheaply: resolved paths and audio headers.

- :class:`Resolver`: ``os.path.realpath`` of many files in few directories, each directory resolved
  once (the file itself is checked for being a link; the result is realpath's, string for string).
- :class:`AudioInfoIndex`: sample rate and frame count of audio files, remembered under
  ``<cache>/fileinfo/index.json`` by resolved path with the file's stamp (size, mtime, ctime,
  inode: :func:`bench.cache.file_stamp`), so a warm start stats a file instead of opening it.
  A file whose stamp changed is read again; a damaged index only costs reading the headers again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class Resolver:
    """``os.path.realpath(p)`` (what ``Path(p).resolve()`` gives), with each directory resolved once."""

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {}

    def __call__(self, path: str | os.PathLike) -> str:
        s = os.fspath(path)
        if not os.path.isabs(s):
            s = os.path.join(os.getcwd(), s)
        head, tail = os.path.split(s)
        if tail in ("", ".", "..") or os.path.islink(s):
            return os.path.realpath(s)
        d = self._dirs.get(head)
        if d is None:
            d = self._dirs[head] = os.path.realpath(head)
        return os.path.join(d, tail)


class AudioInfoIndex:
    """Remembered ``(sample rate, frames)`` of audio files (see the module docstring)."""

    def __init__(self, cache_root: str | Path) -> None:
        self.path = Path(cache_root) / "fileinfo" / "index.json"
        try:
            data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            data = {}
        self._index: dict[str, list[int]] = data if isinstance(data, dict) else {}
        self._changed = False

    def get(self, key: str, stamp: list[int]) -> tuple[int, int] | None:
        """``(sample rate, frames)`` recorded for ``key`` at this ``stamp``, or None."""
        rec = self._index.get(key)
        if isinstance(rec, list) and len(rec) == 6 and rec[:4] == stamp:
            return int(rec[4]), int(rec[5])
        return None

    def put(self, key: str, stamp: list[int], samplerate: int, frames: int) -> None:
        self._index[key] = [*stamp, int(samplerate), int(frames)]
        self._changed = True

    def save(self) -> None:
        """Write the index (atomically) when something was added."""
        if self._changed:
            from bench.cache import atomic_write_text

            atomic_write_text(self.path, json.dumps(self._index, separators=(",", ":")))
            self._changed = False
