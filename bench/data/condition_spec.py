"""What each evaluation condition is: the ``condition`` plugin kind.

A condition says whether it degrades the enrollment of a short test mixture (``enrollment``) or
changes the target's voice along a long stream (``stream``), and in one line what it changes.
The built-in conditions are declared here and built by :func:`bench.data.conditions.apply_condition`
and :mod:`bench.data.streams`. A user's enrollment condition is one function and one decorator::

    from bench.data.condition_spec import enrollment_condition

    @enrollment_condition("telephone", changes="the enrollment band-limited to 300-3400 Hz")
    def telephone(enrollment, rng, ctx):
        return lowpassed(enrollment), {"band_hz": [300, 3400]}

The function gets the clean enrollment (float64 ``[Te]`` at 16 kHz), the condition's own random
generator (all its randomness must come from it, so eval sets are reproducible) and a
:class:`ConditionContext` (corpus, split, speaker, the speakers it must not draw as other voices);
it returns the degraded enrollment (same length) and a dict of meta values for the mixture.
User stream conditions are not supported: a stream is built by :mod:`bench.data.streams`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.config import COMPETING_CONDITIONS, CONDITIONS, STREAM_CONDITIONS
from bench.config import condition_choices as condition_names  # every condition, plugins last
from bench.registry import get, register

KINDS = ("enrollment", "stream")


@dataclass(frozen=True)
class ConditionContext:
    """What an enrollment condition may draw on besides the enrollment itself."""

    corpus: Any
    split: str | None
    speaker: str
    exclude: frozenset[str] = field(default_factory=frozenset)


Degrade = Callable[[np.ndarray, np.random.Generator, ConditionContext], tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class Condition:
    """A condition's nature.

    Attributes:
        name: the name in ``eval.conditions``.
        kind: ``enrollment`` (degrades a short mixture's enrollment) or ``stream`` (a long stream
            whose target voice changes; built-ins only).
        changes: one line saying what it changes, for docs and reports.
        other_voice: the enrollment carries another voice (``eval.competing_sir_db`` applies).
        degrade: a user enrollment condition's function (None for the built-ins).
        version: a user condition's version; it enters its eval sets' cache key, so bump it when
            the function's output changes.
    """

    name: str
    kind: str
    changes: str
    other_voice: bool = False
    degrade: Degrade | None = None
    version: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"condition {self.name!r}: kind={self.kind!r} is not allowed; choices: {', '.join(KINDS)}")
        if self.degrade is not None and self.kind != "enrollment":
            raise ValueError(f"condition {self.name!r}: only enrollment conditions can be plugins "
                             "(streams are built by bench.data.streams)")

    @property
    def builtin(self) -> bool:
        return self.degrade is None

    @property
    def stream(self) -> bool:
        return self.kind == "stream"


def enrollment_condition(name: str, changes: str, version: str = "1") -> Callable[[Degrade], Degrade]:
    """Register ``fn`` as the enrollment condition ``name`` (see the module docstring)."""

    def deco(fn: Degrade) -> Degrade:
        register("condition", name)(Condition(name, "enrollment", changes, degrade=fn, version=version))
        return fn

    return deco


def spec(name: str) -> Condition:
    """The declared nature of condition ``name`` (RegistryError listing the choices if unknown)."""
    return get("condition", name)


def is_stream(name: str) -> bool:
    """Whether ``name`` is a stream condition (False for names not registered)."""
    return name in STREAM_CONDITIONS


def apply_plugin(cond: Condition, enrollment: np.ndarray, rng: np.random.Generator,
                 ctx: ConditionContext) -> tuple[np.ndarray, dict[str, Any]]:
    """Run a user enrollment condition and check what it returns (a clear error naming it)."""
    assert cond.degrade is not None
    out = cond.degrade(np.asarray(enrollment, dtype=np.float64).copy(), rng, ctx)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise TypeError(f"condition {cond.name!r} must return (enrollment, info dict), got {type(out).__name__}")
    enr = np.asarray(out[0], dtype=np.float64)
    if enr.shape != np.shape(enrollment):
        raise ValueError(f"condition {cond.name!r} returned an enrollment of shape {enr.shape}, "
                         f"expected {np.shape(enrollment)}")
    if not np.all(np.isfinite(enr)):
        raise ValueError(f"condition {cond.name!r} returned a non-finite enrollment")
    return enr, dict(out[1])


_BUILTIN = {
    "clean": "nothing: the enrollment is a clean utterance of the target speaker",
    "short": "the enrollment is 0.5-2 s long instead of enroll_s",
    "noisy": "noise (babble at 0 dB, or white / pink / brown / a sample at 0-5 dB) added to the enrollment",
    "reverb": "the enrollment reverberated (RT60 0.6-0.9 s)",
    "bandlimited": "the enrollment through a telephone channel (band-pass, 8 kHz resampling)",
    "competing": "another talker added to the enrollment (eval.competing_sir_db)",
    "drift": "the test target's voice drifts (playback rate ramping to 0.87-0.92 or 1.08-1.15)",
    "combined": "another talker, reverberation, babble at 5 dB and a telephone channel in the enrollment",
    "voice_change": "a stream whose target voice is perturbed part-way (a constant rate change of 8-12 %)",
    "channel_change": "a stream whose target reaches the microphone through another channel part-way",
    "drift_long": "a stream whose target voice drifts slowly over its whole length",
}
for _name in CONDITIONS:
    register("condition", _name)(Condition(_name, "stream" if _name in STREAM_CONDITIONS else "enrollment",
                                           _BUILTIN[_name], other_voice=_name in COMPETING_CONDITIONS))

__all__ = ["KINDS", "Condition", "ConditionContext", "apply_plugin", "condition_names", "enrollment_condition",
           "is_stream", "spec"]
