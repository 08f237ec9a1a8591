"""Personalized speech-enhancement backbones (plugin kind ``pse``).

Importing this package registers the built-in backbones (``pdfnet2``).
"""

from bench.pse import pdfnet2  # noqa: F401  (registers "pdfnet2")
from bench.pse.base import PSEModel, compensate_latency

__all__ = ["PSEModel", "compensate_latency"]
