"""The two readings of the paper's method (``ExperimentConfig.reading``): which space a cell runs in.

``teacher`` (the default): the backbone is conditioned on the teacher's embedding and the
student's vector is mixed into it. ``student``: the backbone is trained on the student's own
embedding (:class:`bench.pipeline.space.StudentSpaceTeacher`), and every embedding of the cell is
the student's. These helpers only read a config; they import nothing heavy.
"""

from __future__ import annotations

from typing import Any


def student_reading(cfg: Any) -> bool:
    """Whether a cell runs in the student-space reading (a personalized cell with ``reading:
    student``; a backbone without embedding has no space)."""
    return bool(cfg.pse.personalized) and getattr(cfg, "reading", "teacher") == "student"


def teacher_reading(cfg: Any) -> Any:
    """``cfg`` in the teacher-space reading: what a student-reading cell's student is distilled
    under. ``pse.source`` names how the cell's own (student-space) backbone is had, so the
    teacher-space backbone the student learns enhanced speech from is the zoo's (trained here when
    the zoo lacks it)."""
    from dataclasses import replace

    if getattr(cfg, "reading", "teacher") == "teacher":
        return cfg
    return replace(cfg, reading="teacher", pse=replace(cfg.pse, source="zoo", path=""))


def space_label(cfg: Any) -> str:
    """The space a student-reading cell runs in, e.g. ``student-space-contrastive``."""
    from bench.losses import variant_label

    return f"student-space-{cfg.distill.loss}{variant_label(cfg.distill)}"

