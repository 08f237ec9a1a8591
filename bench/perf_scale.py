"""``python -m bench.perf --only scale``: start-up and memory at 10 h, 100 h and 1000 h of manifest rows.

A benchmark, not a test. For each size it writes a synthetic CSV manifest corpus (``corpus.name:
manifest``) into a temporary folder: ``--scale-files`` short 16-bit WAV files of voice-like
signals (harmonics of a per-file pitch under a syllable-rate envelope), hard-linked under
``--scale-speakers`` speaker folders until the rows add up to the size (``--scale-row-s`` seconds
per row; a size that would need more than ``--scale-max-rows`` rows gets longer files instead, so
1000 h is 250 000 rows of 14.4 s, not 1 M rows of 3.6 s). Hard links are distinct paths, so every
row is its own utterance to the suite (its own header, hash, cache entry). Then, each in a fresh
Python process:

- **start-up**, cold (an empty cache folder) and warm (the same folder again): what the pipeline's
  corpus stage does before any cell (:meth:`bench.pipeline.stages.Stages.corpus`): the manifest read
  with every file's header, the content key (the bytes' hash), the speaker-disjoint split, the
  index manifest, validation (``corpus.validate`` at its default, ``header``), timed in phases.
  Files were just written, so "cold" is about the suite's cache, not the disk's: the operating
  system's page cache holds them.
- **memory**: the backbone's training mixtures (:func:`bench.pse.train._pse_batch` on the suite's
  :class:`~bench.data.mix.MixtureSampler` over the train split, batches from
  :func:`bench.data.steps.step_batches` as ``train.loader_workers`` = 0 and 2 make them, at the
  default ``corpus.audio_cache_mb``), resident memory of the process and its DataLoader workers
  sampled every few batches (``/proc``: RSS summed, and PSS, which counts pages the forked workers
  share with the parent once). Warm-up lasts until every process's decoded-audio cache is full
  (at most half the draws); the first sample after it and the last are compared (target: within
  10 %), and the mixtures per second per process after warm-up are reported.

The sizes of ``<cache>/fileinfo``, ``filehash``, ``validated`` and ``corpus_index`` are measured
after the warm start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.audio import SR

DEFAULT_HOURS = (10.0, 100.0, 1000.0)
QUICK_HOURS = (1.0, 10.0)
ROW_S = 3.6  # 100 h = 100 000 rows
MAX_ROWS = 250_000  # beyond: longer rows (1000 h = 250 000 rows of 14.4 s)
SPEAKERS = 300
FILES = 400
DRAWS = 6000
QUICK_DRAWS = 600
WORKERS = (0, 2)
CACHE_DIRS = ("fileinfo", "filehash", "validated", "corpus_index")
NOTE = ("scale: synthetic 16-bit WAV rows hard-linked to a few hundred files (each row its own path, header, "
        "hash and cache entry); 'cold' is an empty cache folder, not an empty disk cache (the files were just "
        "written); the corpus stage = manifest read, headers, content key, splits, index manifest, validation "
        "(corpus.validate=header); memory with the default corpus.audio_cache_mb per process")


# --------------------------------------------------------------------------- the corpus
def voice_like(f0: float, seconds: float, seed: int) -> np.ndarray:
    """A voice-like signal: 7 harmonics of ``f0`` with vibrato, a 3-5 Hz syllable envelope with
    pauses, a little noise; float32 at 16 kHz, peak about 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    vib = 1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
    x = sum(np.sin(2 * np.pi * f0 * k * vib * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 0.5
    x = 0.15 * x * env + 0.003 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def plan(hours: float, row_s: float = ROW_S, max_rows: int = MAX_ROWS) -> tuple[int, float]:
    """(rows, seconds per row) of a corpus of ``hours`` of manifest rows."""
    rows = int(round(hours * 3600 / row_s))
    if rows > max_rows:
        rows, row_s = max_rows, hours * 3600 / max_rows
    return max(rows, 1), row_s


def write_corpus(folder: Path, hours: float, row_s: float = ROW_S, max_rows: int = MAX_ROWS,
                 speakers: int = SPEAKERS, files: int = FILES) -> dict[str, Any]:
    """The synthetic manifest corpus of ``hours`` in ``folder`` (see the module docstring):
    ``manifest.csv`` (``path,speaker``) and ``audio/``; returns what was written."""
    import soundfile as sf

    rows, row_s = plan(hours, row_s, max_rows)
    speakers = min(speakers, rows)
    t0 = time.perf_counter()
    base = folder / "base"
    base.mkdir(parents=True, exist_ok=True)
    nfiles = min(files, rows)
    for i in range(nfiles):
        f0 = 85 + (i * 37) % 180  # 85-265 Hz
        sf.write(str(base / f"{i:04d}.wav"), voice_like(f0, row_s, i), SR, subtype="PCM_16")
    audio = folder / "audio"
    lines = ["path,speaker"]
    for s in range(speakers):
        (audio / f"{s:03d}").mkdir(parents=True, exist_ok=True)
    for r in range(rows):
        s = r % speakers
        rel = f"audio/{s:03d}/{r:07d}.wav"
        os.link(base / f"{r % nfiles:04d}.wav", folder / rel)
        lines.append(f"{rel},spk{s:03d}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return {"hours": hours, "rows": rows, "row_s": row_s, "speakers": speakers, "files": nfiles,
            "write_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------- /proc
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


def _kb(path: str, field: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_mb(pid: int | None = None) -> dict[str, float]:
    """RSS and PSS (MiB) of process ``pid`` (this one) and of its children, and their sums."""
    pid = pid or os.getpid()
    kids = _children(pid)
    own_rss, own_pss = _kb(f"/proc/{pid}/status", "VmRSS"), _kb(f"/proc/{pid}/smaps_rollup", "Pss")
    k_rss = sum(_kb(f"/proc/{k}/status", "VmRSS") for k in kids)
    k_pss = sum(_kb(f"/proc/{k}/smaps_rollup", "Pss") for k in kids)
    return {"rss_mb": (own_rss + k_rss) / 1024, "pss_mb": (own_pss + k_pss) / 1024, "main_rss_mb": own_rss / 1024,
            "workers_rss_mb": k_rss / 1024, "processes": 1 + len(kids)}


# --------------------------------------------------------------------------- phases (child processes)
def _cfg(manifest: Path) -> Any:
    from bench.config import CorpusConfig

    return CorpusConfig(name="manifest", path=str(manifest))


def startup(manifest: Path, cache_dir: Path) -> dict[str, Any]:
    """The pipeline's corpus stage on ``manifest`` with cache ``cache_dir``, timed in phases."""
    import bench.data.loaders as loaders
    from bench.cache import Cache
    from bench.pipeline.stages import Stages

    spent: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return run

    import bench.data.validate as validate

    saved = (loaders.content_digest, loaders.assign_splits, loaders.write_manifest, loaders.corpus_from_rows,
             validate.validate)
    loaders.content_digest = timed("content key (hash)", loaders.content_digest)
    loaders.assign_splits = timed("splits", loaders.assign_splits)
    loaders.write_manifest = timed("index manifest", loaders.write_manifest)
    loaders.corpus_from_rows = timed("rows", loaders.corpus_from_rows)
    validate.validate = timed("validation", validate.validate)
    try:
        t0 = time.perf_counter()
        corpus = Stages(Cache(cache_dir), progress=False).corpus(_cfg(manifest), ("val", "test"))
        total = time.perf_counter() - t0
    finally:
        (loaders.content_digest, loaders.assign_splits, loaders.write_manifest, loaders.corpus_from_rows,
         validate.validate) = saved
    rows = spent.pop("rows", 0.0)
    inner = sum(spent[k] for k in ("content key (hash)", "splits", "index manifest") if k in spent)
    phases = {"rows: paths, headers, corpus object": rows - inner,
              **{k: v for k, v in spent.items() if k != "validation"}, "validation": spent.get("validation", 0.0)}
    phases["CSV parse, rest"] = total - sum(phases.values())
    return {"total_s": total, "phases": phases, "utterances": len(corpus), "key": corpus.key,
            "rss_mb": memory_mb()["rss_mb"]}


def _make(sampler: Any, batch_size: int, segment_s: float, rng: np.random.Generator) -> dict[str, Any]:
    """The training loop's batch (:func:`bench.pse.train._pse_batch`), plus what this process's
    decoded-audio cache holds and its pid (read by the benchmark, not by training)."""
    from bench.pse.train import _pse_batch

    b = _pse_batch(sampler, batch_size, segment_s, rng)
    st = sampler.corpus.audio_cache_stats()
    return {"batch": b, "n": int(b["mixture"].shape[0]), "cache_bytes": int(st["nbytes"]), "budget": int(st["budget"] or 0),
            "pid": os.getpid()}


def memory(manifest: Path, cache_dir: Path, workers: int, draws: int, every: int = 4) -> dict[str, Any]:
    """RSS over ``draws`` training mixtures made with ``workers`` DataLoader workers."""
    import functools

    from bench.cache import Cache
    from bench.config import MixConfig, PSEConfig
    from bench.data.steps import PSE_TAG, step_batches
    from bench.pipeline.stages import Stages
    from bench.pse.train import _make_sampler

    corpus = Stages(Cache(cache_dir), progress=False).corpus(_cfg(manifest), ("val", "test"))
    pc = PSEConfig()
    sampler = _make_sampler(corpus, "train", MixConfig(), pc.seed)
    make = functools.partial(_make, sampler, pc.batch_size, pc.segment_s)
    steps = max(2, -(-draws // pc.batch_size))
    samples, trace, full, t_start = [], [], {}, time.perf_counter()
    warm_at: int | None = None
    # the loader is asked for more than is read, so that the workers are still making batches at the
    # last sample (a worker done with its share may free memory, which would flatter the end)
    batches = step_batches(make, pc.seed, PSE_TAG, 0, steps + 4 * workers + 2, workers)
    for step, b in zip(range(steps), batches, strict=False):
        full[int(b["pid"])] = int(b["cache_bytes"]) >= 0.95 * int(b["budget"])
        done = (step + 1) * pc.batch_size
        if warm_at is None and ((len(full) >= max(1, workers) and all(full.values())) or step + 1 >= steps // 2):
            warm_at = step + 1
        if warm_at is not None and (step + 1 - warm_at) % every == 0 or step + 1 == steps:
            samples.append({"mixtures": done, "t": time.perf_counter() - t_start, **memory_mb()})
        elif warm_at is None and step % every == 0:
            trace.append([done, round(memory_mb()["rss_mb"], 1)])
    batches.close()  # stops the workers
    after = [s for s in samples if s["mixtures"] >= (warm_at or 0) * pc.batch_size]
    first, last = after[0], after[-1]
    span = last["t"] - first["t"]
    rate = (last["mixtures"] - first["mixtures"]) / span if span > 0 else float("nan")
    return {"workers": workers, "mixtures": steps * pc.batch_size, "batch_size": pc.batch_size,
            "segment_s": pc.segment_s, "warmup_mixtures": (warm_at or 0) * pc.batch_size,
            "caches_full": all(full.values()), "audio_cache_mb": corpus.audio_cache_mb,
            "first": first, "last": last, "peak_rss_mb": max(s["rss_mb"] for s in after),
            "growth": last["rss_mb"] / first["rss_mb"] - 1.0, "pss_growth": last["pss_mb"] / first["pss_mb"] - 1.0,
            "mixtures_per_s": rate, "mixtures_per_s_per_process": rate / max(1, workers), "samples": len(after),
            "rss_trace": trace + [[s["mixtures"], round(s["rss_mb"], 1)] for s in after]}


def _child(what: str, **kw: Any) -> dict[str, Any]:
    """Run :func:`startup` or :func:`memory` in a fresh interpreter (its own memory, cold imports)."""
    args = json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in kw.items()})
    code = ("import json, sys; from pathlib import Path; import bench.perf_scale as s; "
            f"kw = json.loads(sys.argv[1]); kw = {{k: Path(v) if k in ('manifest', 'cache_dir') else v "
            f"for k, v in kw.items()}}; print('RESULT ' + json.dumps(s.{what}(**kw)))")
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"scale {what} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("RESULT "))
    return {**json.loads(line[len("RESULT "):]), "process_s": time.perf_counter() - t0}


class _OtherCpu:
    """CPU the rest of the machine used since creation (all processes' busy time in /proc/stat less
    this process's and its descendants'), as cores on average: the contention of a measurement."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        try:
            with open("/proc/stat") as fh:
                v = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return float("nan")
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    @staticmethod
    def _own() -> float:
        import resource

        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                      resource.getrusage(resource.RUSAGE_CHILDREN)))

    def cores(self) -> float:
        wall = time.perf_counter() - self.t0
        other = (self._busy() - self.busy0) - (self._own() - self.own0)
        return max(0.0, other / wall) if wall > 0 else float("nan")


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


# --------------------------------------------------------------------------- the section
def scale(hours: tuple[float, ...] = DEFAULT_HOURS, row_s: float = ROW_S, max_rows: int = MAX_ROWS,
          speakers: int = SPEAKERS, files: int = FILES, draws: int = DRAWS, workers: tuple[int, ...] = WORKERS,
          work: Path | None = None, log: Any = None) -> dict[str, Any]:
    """Every size: the corpus written, cold and warm start-up, memory with each worker count."""
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    root = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="pse-kd-scale-"))
    sizes = []
    try:
        for h in hours:
            folder = root / f"{h:g}h"
            shutil.rmtree(folder, ignore_errors=True)
            other = _OtherCpu()
            made = write_corpus(folder / "corpus", h, row_s, max_rows, speakers, files)
            say(f"scale {h:g} h: {made['rows']} rows of {made['row_s']:g} s written in {made['write_s']:.0f} s")
            manifest, cache = folder / "corpus" / "manifest.csv", folder / "cache"
            res: dict[str, Any] = {**made}
            for phase in ("cold", "warm"):
                res[phase] = _child("startup", manifest=manifest, cache_dir=cache)
                say(f"scale {h:g} h: {phase} start-up {res[phase]['total_s']:.1f} s")
            res["cache_bytes"] = {d: _du(cache / d) for d in CACHE_DIRS}
            res["memory"] = []
            for w in workers:
                m = _child("memory", manifest=manifest, cache_dir=cache, workers=w, draws=draws)
                say(f"scale {h:g} h, {w} workers: RSS {m['first']['rss_mb']:.0f} -> {m['last']['rss_mb']:.0f} MiB, "
                    f"{m['mixtures_per_s_per_process']:.0f} mixtures/s per process")
                res["memory"].append(m)
            res["other_cores"] = other.cores()
            sizes.append(res)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        if work is None:
            shutil.rmtree(root, ignore_errors=True)
    return {"sizes": sizes, "draws": draws, "workers": list(workers), "targets": {
        "startup_s_at_100k_rows": 60, "memory_growth": 0.10}}


def tables(s: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the scale section."""
    def f(v: float, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) and np.isfinite(v) else str(v)

    start = []
    other = all("other_cores" in r for r in s["sizes"])  # measured since it was added
    for r in s["sizes"]:
        for phase in ("cold", "warm"):
            p = r[phase]["phases"]
            start.append([f"{r['hours']:g} h", f"{r['rows']}", f"{r['row_s']:g}", phase, f(r[phase]["total_s"], ".1f"),
                          f(p.get("rows: paths, headers, corpus object", 0), ".1f"), f(p.get("content key (hash)", 0), ".1f"),
                          f(p.get("splits", 0), ".1f"), f(p.get("index manifest", 0), ".1f"),
                          f(p.get("validation", 0), ".1f"), f(p.get("CSV parse, rest", 0), ".1f"),
                          f(r[phase]["process_s"], ".1f")] + ([f(r["other_cores"], ".2f")] if other else []))
    per100k = []
    for r in s["sizes"]:
        b, k = r["cache_bytes"], 1e5 / r["rows"] / 2**20
        per100k.append([f"{r['hours']:g} h", f"{r['rows']}"] + [f(b[d] / 2**20, ".1f") for d in CACHE_DIRS] +
                       [f(b["fileinfo"] * k, ".1f"), f(b["filehash"] * k, ".1f"), f"{b['validated']} B",
                        f(b["corpus_index"] * k, ".1f"), f(sum(b.values()) * k, ".1f")])
    mem = []
    for r in s["sizes"]:
        for m in r["memory"]:
            mem.append([f"{r['hours']:g} h", f"{r['rows']}", str(m["workers"]), f"{m['mixtures']}",
                        f"{m['warmup_mixtures']}", f(m["first"]["rss_mb"], ".0f"), f(m["last"]["rss_mb"], ".0f"),
                        f"{100 * m['growth']:+.1f} %", f(m["first"]["pss_mb"], ".0f"), f(m["last"]["pss_mb"], ".0f"),
                        f"{100 * m['pss_growth']:+.1f} %", "yes" if m["caches_full"] else "no",
                        f(m["mixtures_per_s_per_process"], ".0f")])
    return [
        ("scale: start-up, the corpus stage in a fresh process (cold: empty cache folder; warm: again), seconds",
         ["size", "rows", "row s", "cache", "total", "rows: paths, headers, corpus", "content key", "splits",
          "index manifest", "validation", "CSV parse, rest", "process (with imports)",
          *(["other jobs, cores"] if other else [])], start),
        ("scale: cache folders after the warm start, MiB (then MiB per 100 000 rows)",
         ["size", "rows", *CACHE_DIRS, "fileinfo / 100k", "filehash / 100k", "validated", "corpus_index / 100k",
          "all / 100k"], per100k),
        (f"scale: memory over {s['draws']} training mixtures (first sample after warm-up vs last; RSS of the process "
         "and its workers summed, PSS counts shared pages once), MiB",
         ["size", "rows", "workers", "mixtures", "warm-up", "RSS first", "RSS last", "RSS growth", "PSS first",
          "PSS last", "PSS growth", "audio caches full", "mixtures/s per process"], mem),
    ]
