"""The student-space reading: a distilled student used as the conditioning encoder.

With ``reading: student`` the backbone is trained on the student's own embedding of the
enrollment, and everything that embeds speech for that backbone (the enrollment, the static
baseline, the ``shrink`` control's mean, the ceilings and the student's refinement) does it with
the same student. :class:`StudentSpaceTeacher` makes a student look like a teacher to the rest of
the pipeline, so the backbone stage, the embedding caches and the refiners need nothing new: its
``identity`` names the real teacher, the student's stage key and a hash of the student's weights,
so a backbone (in the cache or the zoo) is used only with the very student it was trained with.
"""

from __future__ import annotations

import hashlib

import torch

from bench.teachers.base import Teacher


def state_digest(module: torch.nn.Module, length: int = 16) -> str:
    """SHA-256 (first ``length`` hex digits) of a module's state: names, shapes, dtypes and bytes
    of every tensor in key order (the same for the same weights, whatever file they came from)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        a = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(a.shape)}:{a.dtype}".encode())
        h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.float().numpy().tobytes())
    return h.hexdigest()[:length]


class StudentSpaceTeacher(Teacher):
    """A distilled student standing in for the teacher (``reading: student``).

    Args:
        student: the distilled student (``[B, T]`` waveform -> ``[B, dim]``).
        teacher: the real teacher it was distilled from (for the identity and provenance only; it
            is not called).
        student_key: the student's stage key (``bench.distill.distill_key``).
        label: the student's loss variant, e.g. ``contrastive`` or ``mse``.
    """

    def __init__(self, student: torch.nn.Module, teacher: Teacher, student_key: str, label: str) -> None:
        digest = state_digest(student)
        n_params = sum(p.numel() for p in student.parameters())
        origin = (f"student space: {label} student ({n_params} params, weights {digest}) distilled from "
                  f"{teacher.name} ({teacher.weights_origin})")
        super().__init__(f"student-{label}", teacher.dim, "distilled", digest, origin)
        self.student = student
        self.teacher_identity = teacher.identity
        self.student_key = student_key
        # inference only, as every teacher (bench.teachers.load_teacher): embed() restores the mode
        # it finds, and a student left in training mode would refine with batch statistics and
        # move its own BatchNorm buffers (it is the refiner's student too)
        self.eval()

    @property
    def identity(self) -> str:
        return f"student[{self.teacher_identity}]:{self.student_key[:16]}:{self.weights_hash}"

    def _embed(self, wav: torch.Tensor) -> torch.Tensor:
        return self.student(wav)

