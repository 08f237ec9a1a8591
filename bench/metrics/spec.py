"""What each per-utterance metric is: the ``metric`` plugin kind.

A metric declares its name (the name in ``eval.metrics`` and its leaderboard column), its
direction, its cost and whether it needs the clean reference. The built-ins are declared here and
computed by :func:`bench.metrics.quality.evaluate_utterances`. A user's metric is one function
and one decorator::

    from bench.metrics.spec import metric

    @metric("crest_db", higher_is_better=False, cost="fast", needs_reference=False)
    def crest_db(est, ref, sr):
        return 20 * np.log10(np.abs(est).max() / np.sqrt(np.mean(est ** 2)))

The function gets the latency-aligned estimate and reference (float 1-D numpy at ``sr`` Hz;
``ref`` is None when ``needs_reference`` is False) and returns one float; an exception or a
non-finite value is a failure (NaN, counted in ``<name>_failures``), never a crash. A ``slow``
metric is computed on the first ``eval.quality_n`` items of each condition only (all when 0), a
``fast`` one on every item. Its leaderboard columns (mean, CI, failures, the paired ``d_<name>``
against static) come with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.config import EVAL_METRICS
from bench.metrics.dnsmos import DNSMOS_COLUMNS, PDNSMOS_COLUMNS
from bench.registry import get, names, register

COSTS = ("fast", "slow")
MetricFn = Callable[[np.ndarray, "np.ndarray | None", int], float]


@dataclass(frozen=True)
class Metric:
    """A metric's nature.

    Attributes:
        name: the name in ``eval.metrics``.
        higher_is_better: its direction (sweeps maximise or minimise it by this).
        cost: ``fast`` (every item) or ``slow`` (the ``eval.quality_n`` subset).
        needs_reference: whether it compares with the clean target (False: non-intrusive).
        columns: the per-utterance columns it writes (default: its name).
        fn: a user metric's function (None for the built-ins).
        version: a user metric's version; it enters the cache keys of the cells that score it.
    """

    name: str
    higher_is_better: bool = True
    cost: str = "slow"
    needs_reference: bool = True
    columns: tuple[str, ...] = ()
    fn: MetricFn | None = None
    version: str = ""

    def __post_init__(self) -> None:
        if self.cost not in COSTS:
            raise ValueError(f"metric {self.name!r}: cost={self.cost!r} is not allowed; choices: {', '.join(COSTS)}")
        if not self.columns:
            object.__setattr__(self, "columns", (self.name,))

    @property
    def builtin(self) -> bool:
        return self.fn is None


def metric(name: str, higher_is_better: bool = True, cost: str = "slow", needs_reference: bool = True,
           version: str = "1") -> Callable[[MetricFn], MetricFn]:
    """Register ``fn`` as the per-utterance metric ``name`` (see the module docstring)."""

    def deco(fn: MetricFn) -> MetricFn:
        register("metric", name)(Metric(name, higher_is_better, cost, needs_reference, fn=fn, version=version))
        return fn

    return deco


def spec(name: str) -> Metric:
    """The declared nature of metric ``name`` (RegistryError listing the choices if unknown)."""
    return get("metric", name)


def user_metrics(chosen: Sequence[str]) -> list[Metric]:
    """The user (plugin) metrics among ``chosen``, in name order."""
    return [spec(m) for m in sorted(set(chosen)) if m not in EVAL_METRICS]


def user_metric_columns() -> list[str]:
    """Every column a registered user metric writes (the leaderboard aggregates those present)."""
    return sorted(c for n in names("metric") if n not in EVAL_METRICS for c in spec(n).columns)


def score_user_metrics(metrics: Sequence[Metric], items: Sequence[tuple[Any, Any, Any]], subset: Sequence[bool],
                       sr: int) -> dict[str, np.ndarray]:
    """Columns ``<name>`` and ``<name>_failed`` of each user metric over ``items`` (est, ref, mix);
    a slow one only where ``subset`` is True (NaN elsewhere, not counted as failed)."""
    out: dict[str, np.ndarray] = {}
    for m in metrics:
        vals = np.full(len(items), np.nan)
        failed = np.zeros(len(items), dtype=bool)
        for i, (est, ref, _mix) in enumerate(items):
            if m.cost == "slow" and not subset[i]:
                continue
            try:
                v = float(m.fn(np.asarray(est, dtype=np.float64),  # type: ignore[misc]
                               np.asarray(ref, dtype=np.float64) if m.needs_reference else None, sr))
            except Exception:  # noqa: BLE001  (a user's metric failing on one item is a NaN)
                v = float("nan")
            vals[i] = v
            failed[i] = not np.isfinite(v)
        out[m.name], out[f"{m.name}_failed"] = vals, failed
    return out


for _m in (
    Metric("si_sdr", cost="fast", columns=("si_sdr", "si_sdri")),
    Metric("pesq"), Metric("stoi"), Metric("estoi"),
    Metric("dnsmos", needs_reference=False, columns=DNSMOS_COLUMNS),
    Metric("pdnsmos", needs_reference=False, columns=PDNSMOS_COLUMNS),
):
    register("metric", _m.name)(_m)

__all__ = ["COSTS", "Metric", "metric", "score_user_metrics", "spec", "user_metric_columns", "user_metrics"]
