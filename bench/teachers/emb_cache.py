"""Persistent cache of teacher embeddings keyed by (teacher identity, audio id, crop).

One file per (teacher identity, corpus key): ``<cache>/emb/<hash>/emb.npz`` with string keys
``"<utt_id>|<start>:<end>"`` (``"<utt_id>|full"`` for the whole clip) and a float32 matrix.
:meth:`EmbeddingCache.get_many` embeds only the misses (batched by crop length) and rewrites the
file atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.cache import atomic_path, config_hash
from bench.runtime import key_extras

Crop = tuple[int, int] | None

log = logging.getLogger("bench")


def crop_key(utt_id: str, crop: Crop) -> str:
    return f"{utt_id}|full" if crop is None else f"{utt_id}|{int(crop[0])}:{int(crop[1])}"


def _crop(x: np.ndarray, crop: Crop) -> np.ndarray:
    if crop is None:
        return np.asarray(x, dtype=np.float32)
    a, b = int(crop[0]), int(crop[1])
    seg = np.asarray(x[max(a, 0) : b], dtype=np.float32)
    return np.pad(seg, (0, (b - a) - seg.shape[0])) if seg.shape[0] < b - a else seg


class EmbeddingCache:
    """Teacher embeddings of audio crops, persisted under the cache root."""

    def __init__(self, cache: Any, teacher: Any, corpus_key: str, batch_size: int = 64) -> None:
        self.teacher = teacher
        self.batch_size = batch_size
        # the teacher's device joins the key when it is not the CPU (a GPU gives other low bits);
        # nothing on a CPU, so existing caches stay valid
        dev = getattr(teacher, "device", "cpu")
        self.path: Path = Path(cache.root) / "emb" / config_hash(teacher.identity, corpus_key,
                                                                *key_extras(dev, None)) / "emb.npz"
        self._index: dict[str, int] = {}
        self._rows: list[np.ndarray] = []
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    keys, emb = z["keys"], z["emb"]
                if len(keys) != len(emb):
                    raise ValueError(f"{len(keys)} keys for {len(emb)} embeddings")
            except Exception as exc:  # noqa: BLE001 - a damaged cache file is recomputed, never fatal
                log.warning("cache: teacher embeddings %s are unreadable (%s: %s); recomputing them",
                            self.path, type(exc).__name__, exc)
                keys, emb = np.array([], dtype=str), np.zeros((0, 0), dtype=np.float32)
            self._rows = list(emb.astype(np.float32))
            self._index = {str(k): i for i, k in enumerate(keys)}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get_many(
        self,
        ids: Sequence[str],
        crops: Sequence[Crop] | None = None,
        audio_fn: Callable[[str], np.ndarray] | None = None,
        save: bool = True,
    ) -> torch.Tensor:
        """Embeddings ``[N, D]`` of ``audio_fn(ids[i])[crops[i][0]:crops[i][1]]`` (zero-padded)."""
        crops = list(crops) if crops is not None else [None] * len(ids)
        if len(crops) != len(ids):
            raise ValueError(f"get_many: {len(ids)} ids but {len(crops)} crops")
        keys = [crop_key(u, c) for u, c in zip(ids, crops, strict=True)]
        todo: dict[str, tuple[str, Crop]] = {}
        for k, u, c in zip(keys, ids, crops, strict=True):
            if k not in self._index and k not in todo:
                todo[k] = (u, c)
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if todo:
            if audio_fn is None:
                raise KeyError(f"{len(todo)} embeddings missing (e.g. {next(iter(todo))!r}) and no audio_fn given")
            groups: dict[int, list[tuple[str, np.ndarray]]] = {}
            for k, (u, c) in todo.items():
                wav = _crop(audio_fn(u), c)
                groups.setdefault(wav.shape[0], []).append((k, wav))
            for items in groups.values():
                for i in range(0, len(items), self.batch_size):
                    chunk = items[i : i + self.batch_size]
                    emb = self.teacher.embed(torch.from_numpy(np.stack([w for _, w in chunk]))).float().cpu().numpy()
                    for (k, _), e in zip(chunk, emb, strict=True):
                        self._index[k] = len(self._rows)
                        self._rows.append(e)
            if save:
                self.save()
        return torch.from_numpy(np.stack([self._rows[self._index[k]] for k in keys])) if keys else torch.zeros(0, self.teacher.dim)

    def save(self) -> None:
        keys = np.array(sorted(self._index, key=self._index.get), dtype=str)
        emb = np.stack(self._rows).astype(np.float32) if self._rows else np.zeros((0, self.teacher.dim), np.float32)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=keys, emb=emb)
