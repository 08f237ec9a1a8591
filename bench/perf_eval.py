"""The evaluation cost of one cell, per mixture, before and after the subset and the memo
(``python -m bench.perf --only evalcost``; a benchmark, not a test).

A grid cell scores SI-SDR(i) on every item and its slow metrics (PESQ-WB, STOI, ESTOI; DNSMOS and
pDNSMOS where asked) on every item (``eval.quality_n: 0``, as the suite always did before the
subset existed) or on the first ``quality_n`` items of each condition. An output that is bit for
bit one scored before in the process (``alpha = 0``, a refiner that never moved) takes the slow
metrics computed then (:data:`bench.metrics.quality.SLOW_MEMO`). This section times
:func:`bench.metrics.quality.evaluate_utterances` on the same items in the three regimes, in this
process on one thread (``workers=1``: CPU time is what a core spends; the pool divides the wall
time by its worker count), and projects the cost of a cell of ``n`` items with a subset of ``q``.
"""

from __future__ import annotations

import time
from typing import Any

from bench.audio import SR
from bench.metrics.quality import SLOW_MEMO, evaluate_utterances

# the metric sets the section times (flags of :func:`evaluate_utterances`)
EVALCOST_SETS: dict[str, dict[str, bool]] = {
    "pesq+stoi+estoi": {"pesq": True, "stoi": True, "estoi": True, "dnsmos": False, "pdnsmos": False},
    "dnsmos+pdnsmos": {"pesq": False, "stoi": False, "estoi": False, "dnsmos": True, "pdnsmos": True},
}


def _timed(items: list, **kw: Any) -> float:
    t0 = time.process_time()
    evaluate_utterances(items, workers=1, **kw)
    return time.process_time() - t0


def eval_costs(items: list, subset_n: int, metrics: dict[str, bool], big_n: int = 240) -> dict[str, Any]:
    """CPU seconds per mixture of scoring ``items`` with the slow ``metrics`` (flags of
    :func:`evaluate_utterances`) on every item (before), on the first ``subset_n`` only (after),
    and again on outputs scored before (memo); and the projected cost of a cell of ``big_n``
    mixtures with the subset against one of ``len(items)`` mixtures without it."""
    n = len(items)
    q = min(subset_n, n)
    SLOW_MEMO.clear()
    evaluate_utterances(items[:1], workers=1, **metrics)  # warm-up: imports, ONNX sessions
    SLOW_MEMO.clear()
    fast = _timed(items, **dict.fromkeys(metrics, False))  # SI-SDR(i) only
    SLOW_MEMO.clear()
    every = _timed(items, **metrics)  # memo now holds every item
    memo = _timed(items, **metrics)  # the same outputs again: all from the memo
    SLOW_MEMO.clear()
    sub = _timed(items, subset=[i < q for i in range(n)], **metrics)
    SLOW_MEMO.clear()
    per_fast = fast / n
    per_slow = max(every - fast, 0.0) / n
    return {
        "n": n, "subset_n": q, "metrics": [m for m, on in metrics.items() if on],
        "seconds_each": len(items[0][0]) / SR if items else 0.0,
        "before_cpu_s_per_mixture": every / n,
        "after_cpu_s_per_mixture": sub / n,
        "memo_cpu_s_per_mixture": memo / n,
        "si_sdr_cpu_s_per_mixture": per_fast,
        "slow_cpu_s_per_mixture": per_slow,
        # a cell of big_n mixtures scored with the subset vs the n-mixture cell scored before
        "projected_before_cpu_s": n * (per_fast + per_slow),
        "projected_after_big_cpu_s": big_n * per_fast + q * per_slow,
        "big_n": big_n,
    }


def rows(res: dict[str, Any]) -> list[list[str]]:
    """Table rows of :func:`eval_costs` results (one per metric set)."""
    out = []
    for name, r in res.items():
        out.append([name, f"{r['n']} x {r['seconds_each']:.0f} s", str(r["subset_n"]),
                    f"{r['before_cpu_s_per_mixture']:.3f}", f"{r['after_cpu_s_per_mixture']:.3f}",
                    f"{r['memo_cpu_s_per_mixture']:.4f}",
                    f"{r['projected_before_cpu_s']:.1f}", f"{r['projected_after_big_cpu_s']:.1f}"])
    return out


HEADER = ["metrics", "items", "subset", "before CPU s/mixture (all items)", "after CPU s/mixture (subset)",
          "memo CPU s/mixture", "cell before (n items, all) CPU s", "cell after (240 items, subset) CPU s"]

__all__ = ["EVALCOST_SETS", "HEADER", "eval_costs", "rows"]
