"""Tiny student encoders (registry kind ``student``); importing registers the built-ins."""

from bench.students import tiny  # noqa: F401
from bench.students.tiny import TinyStudent, num_params

__all__ = ["TinyStudent", "num_params"]
