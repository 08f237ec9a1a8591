"""Per-utterance quality metrics, their parallel evaluation, and bootstrap aggregates.

Pure numpy functions first (torchmetrics style), then the batch evaluator and the statistics.

Conventions:

* ``si_sdr`` is the zero-mean scale-invariant SDR of Le Roux et al. (2019), in dB, computed in
  float64 with an ``eps`` on both energies (so identical signals give a large finite value, not
  ``inf``). ``si_sdri = si_sdr(est, ref) - si_sdr(mix, ref)``.
* ``pesq_wb`` is ITU-T P.862.2 wide-band MOS-LQO (``pesq`` package, mode ``'wb'``, 16 kHz).
* ``stoi`` / ``estoi`` come from ``pystoi`` (``extended=False`` / ``True``).
* ``dnsmos_sig/bak/ovrl/p808`` and ``pdnsmos_sig/bak/ovrl`` (non-intrusive: of the estimate alone)
  are DNSMOS P.835 + P.808 and personalized DNSMOS P.835 (:mod:`bench.metrics.dnsmos`), computed
  only when asked for (their columns are absent otherwise).
* Every metric function returns ``NaN`` when it cannot be computed (silence, too short, non-finite
  input, length mismatch, library error, PESQ < 0, pystoi's "not enough STFT frames" 1e-5
  fallback, STOI of a silent reference); it never raises on bad audio. :func:`evaluate_utterances` records such a NaN with a
  ``<metric>_failed`` flag so aggregates can count failures separately from "not computed".
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench.runtime import pool_start_method

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "METRICS",
    "Selection",
    "estoi",
    "evaluate_utterances",
    "pesq_wb",
    "si_sdr",
    "si_sdri",
    "stoi",
]

METRICS: tuple[str, ...] = ("si_sdr", "si_sdri", "pesq", "stoi", "estoi")
_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Selection:
    """Which per-utterance metrics :func:`evaluate_utterances` computes besides SI-SDR(i).

    ``dnsmos``: DNSMOS P.835 SIG/BAK/OVRL and P.808; ``pdnsmos``: personalized DNSMOS P.835."""

    pesq: bool = True
    stoi: bool = True
    estoi: bool = True
    dnsmos: bool = False
    pdnsmos: bool = False

    @classmethod
    def of(cls, names: Iterable[str], pesq: bool = True) -> Selection:
        """From ``eval.metrics`` names (``si_sdr`` is always computed); ``pesq=False`` (the older
        ``eval.pesq`` switch) drops PESQ whatever the names say."""
        chosen = set(names)
        unknown = chosen - {"si_sdr", "pesq", "stoi", "estoi", "dnsmos", "pdnsmos"}
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}")
        return cls(pesq="pesq" in chosen and pesq, stoi="stoi" in chosen, estoi="estoi" in chosen,
                   dnsmos="dnsmos" in chosen, pdnsmos="pdnsmos" in chosen)

    def mos_columns(self) -> tuple[str, ...]:
        """The DNSMOS / pDNSMOS columns this selection adds."""
        from bench.metrics.dnsmos import DNSMOS_COLUMNS, PDNSMOS_COLUMNS

        return (DNSMOS_COLUMNS if self.dnsmos else ()) + (PDNSMOS_COLUMNS if self.pdnsmos else ())

    def columns(self) -> tuple[str, ...]:
        """Every metric column of :func:`evaluate_utterances` with this selection."""
        return METRICS + self.mos_columns()

    def any_slow(self) -> bool:
        """Whether anything besides SI-SDR(i) is computed."""
        return self.pesq or self.stoi or self.estoi or self.dnsmos or self.pdnsmos

    def computed(self, column: str) -> bool:
        """Whether ``column`` is computed (a NaN in it is then a failure)."""
        return column not in ("pesq", "stoi", "estoi") or bool(getattr(self, column))

    def restricted(self, quality: bool, mos: bool) -> Selection:
        """This selection with PESQ/STOI/ESTOI kept only when ``quality`` and DNSMOS/pDNSMOS only when
        ``mos`` (one item's share of the subsets)."""
        return Selection(pesq=self.pesq and quality, stoi=self.stoi and quality, estoi=self.estoi and quality,
                         dnsmos=self.dnsmos and mos, pdnsmos=self.pdnsmos and mos)


# --------------------------------------------------------------------------- pure metrics
def _pair(est: Any, ref: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """1-D float64 copies, or None if shapes differ, are empty or hold non-finite values."""
    e = np.asarray(est, dtype=np.float64).reshape(-1)
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    if e.shape != r.shape or e.size == 0:
        return None
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(r))):
        return None
    return e, r


def si_sdr(est: Any, ref: Any, zero_mean: bool = True) -> float:
    """Scale-invariant SDR of ``est`` against ``ref`` in dB (NaN if undefined).

    ``alpha = <est, ref> / ||ref||^2``, ``SI-SDR = 10 log10((||alpha ref||^2 + eps) /
    (||est - alpha ref||^2 + eps))`` after removing each signal's mean (``zero_mean=True``).
    NaN when lengths differ, a signal is empty or non-finite, or ``ref`` is silent.
    """
    pair = _pair(est, ref)
    if pair is None:
        return float("nan")
    e, r = pair
    if zero_mean:
        e = e - e.mean()
        r = r - r.mean()
    ref_energy = float(np.dot(r, r))
    if ref_energy <= 0.0:
        return float("nan")
    alpha = float(np.dot(e, r)) / ref_energy
    target = alpha * r
    noise = e - target
    value = 10.0 * math.log10(
        (float(np.dot(target, target)) + _EPS) / (float(np.dot(noise, noise)) + _EPS)
    )
    return value if math.isfinite(value) else float("nan")


def si_sdri(est: Any, ref: Any, mix: Any) -> float:
    """SI-SDR improvement over the mixture: ``si_sdr(est, ref) - si_sdr(mix, ref)`` (dB)."""
    return si_sdr(est, ref) - si_sdr(mix, ref)


def pesq_wb(est: Any, ref: Any, sr: int = 16_000) -> float:
    """Wide-band PESQ MOS-LQO; NaN on any failure.

    Failures: silence (``NoUtterancesError`` / ``ValueError``), audio under 0.25 s
    (``BufferTooShortError``), non-finite input, length mismatch, any other library error, and a
    negative or non-finite result.
    """
    pair = _pair(est, ref)
    if pair is None:
        return float("nan")
    e, r = pair
    try:
        from pesq import pesq

        with warnings.catch_warnings():  # silent input: "invalid value encountered in divide"
            warnings.simplefilter("ignore")
            value = float(pesq(int(sr), r.astype(np.float32), e.astype(np.float32), "wb"))
    except Exception:  # noqa: BLE001 - any library failure is a NaN by contract
        return float("nan")
    if not math.isfinite(value) or value < 0.0:
        return float("nan")
    return value


def _stoi(est: Any, ref: Any, sr: int, extended: bool) -> float:
    pair = _pair(est, ref)
    if pair is None:
        return float("nan")
    e, r = pair
    if not np.any(r):  # silent reference: intelligibility undefined (pystoi would return ~0)
        return float("nan")
    try:
        from pystoi import stoi as _pystoi

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = float(_pystoi(r, e, int(sr), extended=extended))
    except Exception:  # noqa: BLE001
        return float("nan")
    # pystoi returns 1e-5 with a RuntimeWarning when no frame is left after silence removal.
    if any("STFT frames" in str(w.message) for w in caught):
        return float("nan")
    return value if math.isfinite(value) else float("nan")


def stoi(est: Any, ref: Any, sr: int = 16_000) -> float:
    """Short-time objective intelligibility (pystoi, classic); NaN on failure."""
    return _stoi(est, ref, sr, extended=False)


def estoi(est: Any, ref: Any, sr: int = 16_000) -> float:
    """Extended STOI (pystoi, ``extended=True``); NaN on failure."""
    return _stoi(est, ref, sr, extended=True)


# --------------------------------------------------------------------------- batch evaluation
# numpy's BLAS runs on one thread for the metrics computed in this process, as in the workers
# (``threadpool_limits(1, user_api="blas")``): SI-SDR's dot products are far too small to gain from
# threads, and on a busy 2-core machine OpenBLAS's waiting threads made each SI-SDR cost about 65 ms
# instead of well under 1 ms (``python -m bench.perf``); the values no longer depend on the core count.


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    threadpool_limits(1)  # forked workers inherit BLAS pools sized for the whole machine
    if "torch" in sys.modules:
        try:
            sys.modules["torch"].set_num_threads(1)
        except Exception:  # noqa: BLE001
            pass


def _slow_metrics(est: Any, ref: Any, sr: int, which: Selection) -> dict[str, float]:
    """PESQ / STOI / ESTOI (and DNSMOS / pDNSMOS) of one item (runs in a worker process)."""
    out = {
        "pesq": pesq_wb(est, ref, sr) if which.pesq else float("nan"),
        "stoi": stoi(est, ref, sr) if which.stoi else float("nan"),
        "estoi": estoi(est, ref, sr) if which.estoi else float("nan"),
    }
    if which.dnsmos or which.pdnsmos:
        from bench.metrics.dnsmos import scores

        out.update(scores(est, sr, dnsmos=which.dnsmos, pdnsmos=which.pdnsmos))
    return out


def _nan_slow(which: Selection) -> dict[str, float]:
    return dict.fromkeys(("pesq", "stoi", "estoi", *which.mos_columns()), float("nan"))


def _run_pool(
    items: Sequence[tuple[Any, Any, Any]],
    indices: list[int],
    sr: int,
    sels: Mapping[int, Selection],
    workers: int,
    ctx: Any,
    results: dict[int, dict[str, float]],
) -> list[int]:
    """Compute items ``indices`` (item ``i`` with the metrics ``sels[i]``) in one pool; return the
    indices lost to a broken pool."""
    lost: list[int] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as ex:
        futures = {}
        try:
            for i in indices:
                est, ref, _ = items[i]
                futures[i] = ex.submit(_slow_metrics, est, ref, sr, sels[i])
        except BrokenProcessPool:
            pass
        for i in indices:
            fut = futures.get(i)
            if fut is None:
                lost.append(i)
                continue
            try:
                results[i] = fut.result()
            except BrokenProcessPool:
                lost.append(i)
            except Exception:  # noqa: BLE001
                results[i] = _nan_slow(sels[i])
    return lost


def _probe() -> int:
    return 1


def _pool_works(ctx: Any) -> bool:
    """Whether a one-worker pool of this start method can run a trivial task."""
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_worker_init) as ex:
            return ex.submit(_probe).result() == 1
    except Exception:  # noqa: BLE001
        return False


def _pooled(items: Sequence[tuple[Any, Any, Any]], workers: int, sels: Mapping[int, Selection], sr: int,
            mp_context: str | None, slow: dict[int, dict[str, float]], indices: list[int] | None = None) -> None:
    """The slow metrics of :func:`evaluate_utterances` of ``items[indices]`` (all by default; item
    ``i`` with the metrics ``sels[i]``) in worker processes, into ``slow``."""
    import multiprocessing as mp

    todo = list(range(len(items))) if indices is None else list(indices)
    mos = any(sels[i].dnsmos or sels[i].pdnsmos for i in todo)
    n = len(todo)
    if mp_context is None:  # fork, or spawn once CUDA is live here (bench.runtime)
        mp_context = pool_start_method()
    ctx = mp.get_context(mp_context)
    if mp_context == "fork":  # import once here, not in every forked worker
        mods = ("pesq", "pystoi") + (("onnxruntime", "librosa") if mos else ())
        for mod in mods:
            try:
                __import__(mod)
            except Exception:  # noqa: BLE001 - the worker reports the failure as NaN
                pass
    lost = _run_pool(items, todo, sr, sels, min(workers, n), ctx, slow)
    if lost and len(lost) == n and not _pool_works(ctx):
        warnings.warn(
            f"evaluate_utterances: a {mp_context!r} process pool cannot run here; "
            "computing in this process",
            RuntimeWarning,
            stacklevel=3,
        )
        for i in lost:
            slow[i] = _slow_metrics(items[i][0], items[i][1], sr, sels[i])
    elif lost:
        warnings.warn(
            f"evaluate_utterances: a worker died; retrying {len(lost)} item(s) one per pool",
            RuntimeWarning,
            stacklevel=3,
        )
        for i in lost:  # isolate the culprit: one item per fresh pool
            if _run_pool(items, [i], sr, sels, 1, ctx, slow):
                slow[i] = _nan_slow(sels[i])


def evaluate_utterances(
    items: Sequence[tuple[Any, Any, Any]],
    workers: int = 2,
    pesq: bool = True,
    sr: int = 16_000,
    mp_context: str | None = None,
    estoi: bool = True,
    stoi: bool = True,
    dnsmos: bool = False,
    pdnsmos: bool = False,
    subset: Sequence[bool] | None = None,
    mos_subset: Sequence[bool] | None = None,
) -> pd.DataFrame:
    """Evaluate ``items`` = ``[(est, ref, mix), ...]`` (1-D numpy arrays) into a DataFrame.

    ``subset`` (one bool per item): compute the slow metrics (PESQ, STOI, ESTOI, DNSMOS) of those
    items only; the others get NaN with their failure flags unset (not computed, not failed).
    ``mos_subset``: the same for DNSMOS / pDNSMOS alone (default: ``subset``), so that both subsets
    are scored in one pass. SI-SDR(i) covers every item. An item whose estimate and reference are bit for bit those of one
    scored before in this process (another cell with the same output: ``alpha = 0``, a refiner
    that never moved) takes the slow metrics computed then (:data:`SLOW_MEMO`), not recomputed.

    One row per item, in order, with columns ``si_sdr, si_sdri, pesq, stoi, estoi`` and a boolean
    ``<metric>_failed`` per metric. A metric that cannot be computed is NaN with its flag set; with
    ``pesq=False`` the ``pesq`` column is NaN and ``pesq_failed`` False (not computed, not failed);
    the same for ``stoi=False`` and ``estoi=False``. ``dnsmos=True`` adds ``dnsmos_sig``,
    ``dnsmos_bak``, ``dnsmos_ovrl``, ``dnsmos_p808`` of each estimate, ``pdnsmos=True``
    ``pdnsmos_sig``, ``pdnsmos_bak``, ``pdnsmos_ovrl`` (:mod:`bench.metrics.dnsmos`), each with its
    ``<metric>_failed`` flag.

    SI-SDR(i) is computed here; PESQ/STOI/ESTOI in ``workers`` processes
    (``ProcessPoolExecutor``; start method ``mp_context``, default ``"fork"`` where available, else
    ``"spawn"``, and ``"spawn"`` whenever this process has initialised CUDA, which a forked child
    cannot use safely: :func:`bench.runtime.pool_start_method`; one torch/OpenMP thread per
    worker). ``"fork"`` is the default because the
    workers only run numpy/pesq/pystoi and it also works from interactive sessions and scripts
    whose ``__main__`` cannot be re-imported, which ``"spawn"`` needs. ``workers <= 1`` computes
    in this process. A worker that dies (e.g. a C-library crash) does not crash the run: its pool
    is rebuilt and the lost items are retried one per pool; an item that kills a worker again
    gets NaN and failure flags. If every item was lost and a probe task cannot run in a fresh pool
    either (e.g. ``"spawn"`` from a session whose ``__main__`` cannot be re-imported), the items
    are computed in this process instead, with a warning.
    """
    import pandas as pd

    which = Selection(pesq=pesq, stoi=stoi, estoi=estoi, dnsmos=dnsmos, pdnsmos=pdnsmos)
    n = len(items)
    rows: list[dict[str, Any]] = []
    with threadpool_limits(1, user_api="blas"):
        for est, ref, mix in items:
            rows.append({"si_sdr": si_sdr(est, ref), "si_sdri": si_sdri(est, ref, mix)})

    for name, flags in (("subset", subset), ("mos_subset", mos_subset)):
        if flags is not None and len(flags) != n:
            raise ValueError(f"{name} has {len(flags)} flags for {n} items")
    in_q = [subset is None or bool(subset[i]) for i in range(n)]
    in_mos = in_q if mos_subset is None else [bool(f) for f in mos_subset]
    sels = {i: which.restricted(in_q[i], in_mos[i]) for i in range(n)}
    wanted = [i for i in range(n) if sels[i].any_slow()]
    slow: dict[int, dict[str, float]] = {}
    digests = {i: _item_digest(items[i], sr, sels[i]) for i in wanted}
    for i, d in digests.items():
        if d in SLOW_MEMO:
            slow[i] = dict(SLOW_MEMO[d])
            SLOW_MEMO.move_to_end(d)
    todo = [i for i in wanted if i not in slow]
    if todo and workers <= 1:
        with threadpool_limits(1, user_api="blas"):
            for i in todo:
                try:
                    slow[i] = _slow_metrics(items[i][0], items[i][1], sr, sels[i])
                except Exception:  # noqa: BLE001
                    slow[i] = _nan_slow(sels[i])
    elif todo:
        _pooled(items, workers, sels, sr, mp_context, slow, todo)
    for i in todo:
        if i in slow:
            _remember(digests[i], slow[i])

    for i, row in enumerate(rows):
        row.update(_nan_slow(which))  # what the item's share of the subsets leaves out
        row.update(slow.get(i, {}))
    columns = which.columns()
    df = pd.DataFrame(rows, columns=list(columns))
    mos_cols = set(which.mos_columns())
    for m in columns:
        failed = ~np.isfinite(df[m].to_numpy(dtype=np.float64))
        if not which.computed(m):
            failed = np.zeros(n, dtype=bool)
        elif m not in ("si_sdr", "si_sdri"):
            failed &= np.asarray(in_mos if m in mos_cols else in_q, dtype=bool)  # outside its subset: not failed
        df[f"{m}_failed"] = failed
    return df


# Slow metrics already computed in this process, by a digest of (estimate, reference, sample
# rate, metric selection); bounded (least recently used out first).
SLOW_MEMO: OrderedDict[str, dict[str, float]] = OrderedDict()
SLOW_MEMO_MAX = 50_000


def _item_digest(item: tuple[Any, Any, Any], sr: int, which: Selection) -> str:
    est, ref = (np.ascontiguousarray(np.asarray(x, dtype=np.float32)) for x in item[:2])
    h = hashlib.sha1(f"{sr}:{which}:{est.size}:{ref.size}:".encode())
    h.update(est.tobytes())
    h.update(ref.tobytes())
    return h.hexdigest()


def _remember(digest: str, metrics: dict[str, float]) -> None:
    """Keep ``metrics`` of an item unless a worker lost it (all NaN: it may be retried)."""
    if any(np.isfinite(v) for v in metrics.values()):
        SLOW_MEMO[digest] = dict(metrics)
        while len(SLOW_MEMO) > SLOW_MEMO_MAX:
            SLOW_MEMO.popitem(last=False)
