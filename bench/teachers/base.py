"""Teacher base class, hub/offline resolution helpers and shared utilities.

A :class:`Teacher` wraps a heavy pretrained speaker encoder. ``embed(wav[B,T])`` returns
L2-normalised ``[B, dim]`` embeddings without gradients, deterministically (eval mode); its
``identity`` (name + source + weights hash) keys every cache that depends on the teacher.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OFFLINE_ENVS = ("PSE_KD_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


# Bump when teacher code changes what an embedding is (every downstream cache key changes).
STAGE_VERSION = 1

class TeacherLoadError(RuntimeError):
    """A teacher's weights could not be found or loaded; the message says where it looked."""


def by_source(name: str, cfg: Any, device: Any, **makers: Any) -> Any:
    """The teacher ``makers[cfg.source]()`` builds, on ``device``; an unknown ``teacher.source``
    names the choices (the keyword names: ``pretrained``, ``local``, ``trained``)."""
    if cfg.source not in makers:
        raise TeacherLoadError(f"teacher {name!r}: unknown source {cfg.source!r}; choices: {', '.join(makers)}")
    return makers[cfg.source]().to(device)


def register_teacher(name: str, *, pretrained: Any, local: Any, trained: Any) -> Any:
    """Register teacher plugin ``name`` built according to ``teacher.source``. Each maker is called
    as ``maker(cfg, cache, corpus, device)``; the registered factory (returned) has the registry's
    teacher signature ``(cfg, cache, corpus, device="cpu")``."""
    from bench.registry import register

    makers = {"pretrained": pretrained, "local": local, "trained": trained}

    def make(cfg: Any, cache: Any, corpus: Any, device: Any = "cpu") -> Any:
        return by_source(name, cfg, device,
                         **{source: functools.partial(f, cfg, cache, corpus, device) for source, f in makers.items()})

    make.__name__ = make.__qualname__ = f"make_{name}"
    return register("teacher", name)(make)


def check_trainable(name: str, cfg: Any, corpus: Any, presets: Any = None) -> None:
    """Raise unless ``source=trained`` can run: a corpus, and ``train_size`` one of ``presets``."""
    if corpus is None:
        raise TeacherLoadError(f"teacher {name!r}: source=trained needs a corpus")
    if presets is not None and cfg.train_size not in presets:
        raise TeacherLoadError(f"teacher {name!r}: train_size={cfg.train_size!r}; choices: {', '.join(presets)}")


class Teacher(nn.Module):
    """Heavy speaker encoder.

    Subclasses implement :meth:`_embed` (raw embeddings of a same-length batch on
    ``self.device``); :meth:`embed` adds input conversion, chunking, normalisation and
    ``no_grad``.

    Attributes:
        name: plugin name (``ge2e``, ``ecapa``, ``titanet``, ``wavlm``).
        dim: embedding dimension.
        source: ``pretrained`` | ``local`` | ``trained``.
        weights_hash: hash of the weight files.
        weights_origin: human-readable provenance of the weights.
        identity: ``name:source:weights_hash`` (cache key of everything downstream).
    """

    max_batch: int = 64

    def __init__(self, name: str, dim: int, source: str, weights_hash: str, weights_origin: str) -> None:
        super().__init__()
        self.name = name
        self.dim = int(dim)
        self.source = source
        self.weights_hash = weights_hash
        self.weights_origin = weights_origin
        self.info: dict[str, Any] = {}

    @property
    def identity(self) -> str:
        # the code version joins the identity from version 2 on (version 1 keys stay valid)
        tag = f":v{STAGE_VERSION}" if STAGE_VERSION > 1 else ""
        return f"{self.name}:{self.source}:{self.weights_hash}{tag}"

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def _embed(self, wav: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, wav: Any) -> torch.Tensor:
        """``wav[B,T]`` (or ``[T]``; tensor or numpy, 16 kHz) -> L2-normalised ``[B, dim]``.

        The result is on the input's device (CPU for numpy input). An item whose raw
        embedding is degenerate (silence giving an all-zero vector) gets a fixed unit vector.
        """
        x = torch.as_tensor(np.asarray(wav) if not torch.is_tensor(wav) else wav)
        out_device = x.device if torch.is_tensor(wav) else torch.device("cpu")
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2:
            raise ValueError(f"{self.name} teacher: expected wav [B,T] or [T], got shape {tuple(x.shape)}")
        x = torch.nan_to_num(x.float())
        was_training = self.training
        self.eval()
        outs = []
        try:
            for i in range(0, x.shape[0], self.max_batch):
                e = self._embed(x[i : i + self.max_batch].to(self.device)).float()
                outs.append(e.reshape(e.shape[0], -1))
        finally:
            self.train(was_training)
        e = torch.cat(outs) if outs else torch.zeros(0, self.dim)
        norm = e.norm(dim=-1, keepdim=True)
        bad = ~(norm.squeeze(-1) > 1e-8) | ~torch.isfinite(e).all(-1)
        e = F.normalize(torch.nan_to_num(e), dim=-1, eps=1e-8)
        if bad.any():
            e[bad] = 1.0 / self.dim**0.5
        return e.to(out_device)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.embed(wav)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r}, dim={self.dim}, origin={self.weights_origin!r})"


# --------------------------------------------------------------------------- offline helpers
def is_offline() -> bool:
    """True when an env var says offline or a hub host cannot be reached within ~2 s."""
    for k in OFFLINE_ENVS:
        if os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return not _reachable("huggingface.co", 443, timeout=2.0)


def _reachable(host: str, port: int, timeout: float) -> bool:
    result = [False]

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = True
        except OSError:
            pass

    th = threading.Thread(target=probe, daemon=True)
    th.start()
    th.join(timeout)
    return result[0]


def hf_cache_dir() -> Path:
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def resolve_hf_snapshot(repo_id: str, teacher: str, allow_patterns: list[str] | None = None) -> Path:
    """Local directory of hub repo ``repo_id``: the HF cache snapshot if present, else a
    download when online. Offline misses fail fast with a message naming the id, the cache
    directory searched and the other sources."""
    from huggingface_hub import snapshot_download

    cache = hf_cache_dir()
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=allow_patterns))
    except Exception:
        pass
    if is_offline():
        raise TeacherLoadError(offline_message(teacher, repo_id, cache))
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))
    except Exception as exc:
        raise TeacherLoadError(offline_message(teacher, repo_id, cache) + f" (download failed: {exc})") from exc


def offline_message(teacher: str, hub_id: str, cache: Path | str) -> str:
    return (
        f"teacher {teacher!r}: pretrained weights {hub_id!r} are not in the local cache "
        f"({cache}) and the model hub is unreachable (offline). Other sources: "
        f"teacher.source=local with teacher.path=<checkpoint dir or file>, or "
        f"teacher.source=trained to train the {teacher} architecture on the corpus in the suite."
    )


def check_local_path(teacher: str, path: str, what: str) -> Path:
    if not path:
        raise TeacherLoadError(f"teacher {teacher!r}: source=local needs teacher.path ({what})")
    p = Path(path).expanduser()
    if not p.exists():
        raise TeacherLoadError(f"teacher {teacher!r}: teacher.path={str(p)!r} does not exist (expected {what})")
    return p.resolve()


def trained_origin(name: str, cfg: Any, corpus_key: str, info: dict[str, Any]) -> str:
    eer = info.get("val_eer")
    eer_s = f"{100 * eer:.1f}%" if isinstance(eer, float) else "n/a"
    return (
        f"trained in-suite: {name} {cfg.train_size} preset, {info.get('steps', cfg.train_steps)} steps "
        f"on corpus {corpus_key}, val EER {eer_s}"
    )
