"""Teacher encoders (registry kind ``teacher``): ``ge2e``, ``vfl``, ``ecapa``, ``titanet``, ``wavlm``.

Importing this package registers the plugins; heavy libraries (speechbrain, NeMo,
transformers, onnxruntime) are imported only inside the plugin that loads them.
"""

from __future__ import annotations

from typing import Any

from bench import registry
from bench.teachers import ecapa, ge2e, titanet, vfl, wavlm  # noqa: F401  (registration)
from bench.teachers.base import Teacher, TeacherLoadError


def load_teacher(cfg: Any, cache: Any, corpus: Any = None, device: Any = "cpu") -> Teacher:
    """Build teacher ``cfg.name`` from ``cfg.source`` (see :class:`bench.config.TeacherConfig`)."""
    teacher = registry.get("teacher", cfg.name)(cfg, cache, corpus, device)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


__all__ = ["Teacher", "TeacherLoadError", "load_teacher"]
