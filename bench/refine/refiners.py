"""The registered refiners: the baseline, the systems under test, the control and the references.

| name | role | embedding the stream starts from / what is encoded after each block |
|---|---|---|
| ``static`` | baseline | the enrollment's teacher embedding, never updated (``alpha = 0``) |
| ``ema`` | system | the student encodes the enhanced block (+ context; or, with ``student_mode: streaming``, each block once with its state carried) |
| ``oracle`` | system | the teacher encodes the enhanced block (+ context): heavy, deployable |
| ``shrink`` | control | a fixed speaker-agnostic vector, the mean training embedding (same rate, rule, gate) |
| ``oracle_target`` | ceiling | the teacher encodes the *clean target's* block + context (not deployable) |
| ``oracle_clean`` | reference | the teacher embedding of the whole clean test target, never updated |
| ``oracle_enroll_clean`` | reference | the teacher embedding of the clean enrollment, never updated |
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.config import STUDENT_MODES, RefineConfig
from bench.refine.base import FixedRefiner, UpdatingRefiner
from bench.registry import register


@register("refiner", "static")
class StaticRefiner(FixedRefiner):
    """Keeps the enrollment embedding: ``e_{k+1} = e_k`` (alpha is ignored)."""

    name = "static"
    role = "baseline"

    def __init__(self, cfg: RefineConfig | None = None, student: Any = None, teacher: Any = None) -> None:
        super().__init__(cfg)


@register("refiner", "ema")
class EMARefiner(UpdatingRefiner):
    """Student refinement: ``s_k = normalize(student(window))``.

    ``refine.student_mode``: ``window`` (default) encodes the block plus ``context_s`` seconds of
    past output from scratch after every block; ``streaming`` feeds each block once to the
    student's streaming inference (:mod:`bench.students.streaming`), whose state is carried across
    the stream's blocks: ``s_k`` is the student's embedding of all the output so far, for one pass
    over the audio, and no context is passed.
    """

    name = "ema"
    uses_student = True

    def __init__(self, cfg: RefineConfig | None = None, student: nn.Module | None = None,
                 teacher: Any = None) -> None:
        super().__init__(cfg)
        if student is None:
            raise ValueError("refiner 'ema' needs a student encoder (got None)")
        self.student = student
        student.eval()  # inference only: BatchNorm statistics / dropout frozen
        self.mode = str(getattr(self.cfg, "student_mode", "window") or "window")
        if self.mode not in STUDENT_MODES:
            raise ValueError(f"refine.student_mode={self.mode!r}; choices: {', '.join(STUDENT_MODES)}")
        self.stream: nn.Module | None = None
        self._state: Any = None
        if self.mode == "streaming":
            from bench.students.streaming import streaming_encoder

            self.stream = streaming_encoder(student)
            self.stateful = True
            self.context_s = 0.0  # the state holds the past; streaming passes no history

    @classmethod
    def label(cls, cfg: Any) -> str:
        from bench.losses import variant_label

        return f"student-{cfg.distill.loss}{variant_label(cfg.distill)}"

    def reset(self) -> None:
        super().reset()
        self._state = None

    def encoder(self) -> nn.Module:
        """What one block costs: the window student, or one fresh streaming block (the same
        operations as a block in the steady state)."""
        return self.stream if self.stream is not None else self.student

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        if self.stream is None:
            return self.student(window)
        if self._state is None:
            self._state = self.stream.init_state(window.shape[0], window.device)
        emb, self._state = self.stream.step(window, self._state)
        return emb


@register("refiner", "oracle")
class OracleRefiner(UpdatingRefiner):
    """Teacher-oracle refinement: ``s_k = teacher.embed(window)`` of the enhanced output."""

    name = "oracle"
    uses_teacher = True

    def __init__(self, cfg: RefineConfig | None = None, student: Any = None, teacher: Any = None) -> None:
        super().__init__(cfg)
        if teacher is None:
            raise ValueError(f"refiner {self.name!r} needs a teacher (got None)")
        self.teacher = teacher

    def encoder(self) -> Any:
        return self.teacher.embed

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        return self.teacher.embed(window)


@register("refiner", "oracle_target")
class TargetOracleRefiner(OracleRefiner):
    """Ceiling of re-embedding refiners, not deployable: after each block the teacher embeds the
    **clean target's** block plus the same past context (never anything later)."""

    name = "oracle_target"
    role = "ceiling"
    needs_target = True

    def source(self, enhanced_window: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is None:
            raise ValueError("refiner 'oracle_target' needs the clean target's blocks (got None)")
        return target


@register("refiner", "shrink")
class ShrinkRefiner(UpdatingRefiner):
    """Control: the same rate, rule and schedule, but every update moves the embedding toward a
    fixed speaker-agnostic vector (the mean teacher embedding of the training enrollments).
    A refiner whose gain is no larger than this one's has shown movement, not speaker
    information."""

    name = "shrink"
    role = "control"
    needs_mean_embedding = True

    def __init__(self, cfg: RefineConfig | None = None, student: Any = None, teacher: Any = None) -> None:
        super().__init__(cfg)
        self.mean: torch.Tensor | None = None

    def bind(self, mean_embedding: torch.Tensor | None = None) -> None:
        if mean_embedding is not None:
            self.mean = torch.as_tensor(mean_embedding).float().reshape(1, -1)

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            raise ValueError("refiner 'shrink' needs the mean training embedding (bind(mean_embedding=...))")
        return self.mean.to(window.device).expand(window.shape[0], -1)


@register("refiner", "oracle_clean")
class CleanOracleRefiner(FixedRefiner):
    """Reference, not deployable: the static teacher embedding of the **whole clean test target**.
    ``oracle_clean`` minus ``static`` is what a perfect fixed embedding of the test audio is worth."""

    name = "oracle_clean"
    role = "reference"
    start = "clean_target"

    def __init__(self, cfg: RefineConfig | None = None, student: Any = None, teacher: Any = None) -> None:
        super().__init__(cfg)


@register("refiner", "oracle_enroll_clean")
class CleanEnrollRefiner(FixedRefiner):
    """Reference, not deployable: the static teacher embedding of the **clean enrollment** (the
    same crop without its degradation): what fixing the enrollment alone is worth."""

    name = "oracle_enroll_clean"
    role = "reference"
    start = "clean_enrollment"

    def __init__(self, cfg: RefineConfig | None = None, student: Any = None, teacher: Any = None) -> None:
        super().__init__(cfg)
