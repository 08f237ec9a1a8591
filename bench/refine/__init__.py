"""On-the-fly refinement of the speaker embedding during streaming enhancement.

After each block ``k`` of the stream a refiner encodes audio of that block (and
``refine.context_s`` seconds before it) into ``s_k`` and updates the embedding by a rule
(:mod:`bench.refine.base`); :func:`enhance_streaming` runs a backbone block by block and applies
the refiner between blocks. The registered refiners and their roles are listed in
:mod:`bench.refine.refiners`.

Everything else in the suite asks this package what a cell's refiner is
(:func:`refiner_class`, :func:`system_name`, :func:`updates_embedding`, :func:`uses_student`,
:func:`names_with_role`) instead of naming refiners.
"""

from __future__ import annotations

from typing import Any

from bench.refine.base import (
    GATES,
    ROLES,
    RULES,
    STARTS,
    FixedRefiner,
    Refiner,
    UpdatingRefiner,
    encoder_macs_per_s,
)
from bench.refine.refiners import (
    CleanEnrollRefiner,
    CleanOracleRefiner,
    EMARefiner,
    OracleRefiner,
    ShrinkRefiner,
    StaticRefiner,
    TargetOracleRefiner,
)
from bench.refine.streaming import (
    StreamResult,
    StreamTiming,
    block_samples,
    enhance_streaming,
    time_streaming,
)

__all__ = [
    "GATES",
    "ROLES",
    "RULES",
    "STARTS",
    "CleanEnrollRefiner",
    "CleanOracleRefiner",
    "EMARefiner",
    "FixedRefiner",
    "OracleRefiner",
    "Refiner",
    "ShrinkRefiner",
    "StaticRefiner",
    "StreamResult",
    "StreamTiming",
    "TargetOracleRefiner",
    "UpdatingRefiner",
    "block_samples",
    "encoder_macs_per_s",
    "enhance_streaming",
    "time_streaming",
    "make_refiner",
    "names_with_role",
    "reference_name",
    "default_system",
    "baseline_name",
    "cost_variants",
    "refiner_class",
    "system_name",
    "updates_embedding",
    "uses_student",
]


def refiner_class(name: str) -> type[Refiner]:
    """The registered refiner class ``name`` (a registry error lists the choices)."""
    from bench import registry

    cls = registry.get("refiner", name)
    if not (isinstance(cls, type) and issubclass(cls, Refiner)):
        raise TypeError(f"refiner {name!r} is registered as {cls!r}, which is not a bench.refine.Refiner subclass")
    return cls


def make_refiner(cfg: Any, student: Any = None, teacher: Any = None) -> Refiner:
    """Build the refiner ``cfg.name`` (a :class:`bench.config.RefineConfig`) from the registry."""
    return refiner_class(cfg.name)(cfg, student, teacher)


def names_with_role(role: str) -> list[str]:
    """Registered refiner names whose class has ``role`` (see :data:`ROLES`)."""
    from bench import registry

    if role not in ROLES:
        raise ValueError(f"unknown refiner role {role!r}; choices: {', '.join(ROLES)}")
    out = []
    for n in registry.names("refiner"):
        cls = registry.get("refiner", n)
        # a registration that is no Refiner class cannot declare a role (refiner_class says so when used)
        if isinstance(cls, type) and issubclass(cls, Refiner) and cls.role == role:
            out.append(n)
    return out


def baseline_name() -> str:
    """The one refiner with role ``baseline`` (``static``)."""
    names = names_with_role("baseline")
    if len(names) != 1:
        raise RuntimeError(f"exactly one refiner must have role 'baseline', found {names}")
    return names[0]


def reference_name(start: str) -> str:
    """The fixed reference refiner that starts from ``start`` (``clean_target``: ``oracle_clean``),
    or "" when none is registered."""
    for n in names_with_role("reference"):
        if refiner_class(n).start == start:
            return n
    return ""


def default_system() -> str:
    """The refiner a sweep over ``refine.alpha`` uses when its grid names none that updates: the
    first registered ``system`` refiner that uses a student (``ema``)."""
    for n in names_with_role("system"):
        if refiner_class(n).uses_student:
            return n
    raise RuntimeError("no registered refiner uses a student")


def updates_embedding(cfg: Any) -> bool:
    """Whether the cell's refiner moves the embedding during the stream."""
    return bool(cfg.pse.personalized) and refiner_class(cfg.refine.name).updates_embedding


def uses_student(cfg: Any) -> bool:
    """Whether the cell needs a distilled student."""
    return bool(cfg.pse.personalized) and refiner_class(cfg.refine.name).uses_student


def system_name(cfg: Any) -> str:
    """Leaderboard system label of a cell (``nonpersonalized`` for a backbone without embedding)."""
    if not cfg.pse.personalized:
        return "nonpersonalized"
    from bench.readings import space_label, student_reading

    if student_reading(cfg):  # e.g. static@student-space-contrastive, student@student-space-mse
        cls = refiner_class(cfg.refine.name)
        return f"{'student' if cls.uses_student else cls.label(cfg)}@{space_label(cfg)}"
    return refiner_class(cfg.refine.name).label(cfg)


def cost_variants(student: Any, teacher: Any, alpha: float = 0.1, context_s: float = 1.5) -> dict[str, Refiner]:
    """The refiners whose per-block cost ``python -m bench.perf`` measures, by a readable label:
    the baseline, the default student system with its window and its streaming encoder, and the
    teacher-oracle system (the first ``system`` refiner that uses the teacher)."""
    from bench.config import RefineConfig

    stu, tea = default_system(), next(n for n in names_with_role("system") if refiner_class(n).uses_teacher)
    return {
        f"backbone alone ({baseline_name()})": make_refiner(RefineConfig(name=baseline_name())),
        "+ student, window": make_refiner(RefineConfig(name=stu, alpha=alpha, context_s=context_s), student),
        "+ student, streaming": make_refiner(RefineConfig(name=stu, alpha=alpha, student_mode="streaming"), student),
        "+ teacher oracle, window": make_refiner(RefineConfig(name=tea, alpha=alpha, context_s=context_s),
                                                 None, teacher),
    }
