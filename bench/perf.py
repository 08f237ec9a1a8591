"""``python -m bench.perf``: where the time goes, on the device at hand (a benchmark, not a test).

Sections (each printed as a table; all numbers also go to ``--out`` as JSON and Markdown):

1. **cache**: the smoke grid (``ablations/smoke.yaml``) run by ``python -m bench.run`` in a fresh
   temporary cache (cold: corpus, teacher embeddings, backbones, students, cells) and again on
   that cache (warm), as subprocesses, and the per-cell columns of its leaderboard: ``rtf``,
   ``block_ms_p50/p95``, ``batch_rtf`` and ``peak_mem_mb`` (peak memory per cell).
2. **harness**: two refining cells of that grid evaluated by the pipeline (``Pipeline._evaluate``,
   stages loaded first) against the sum of their pure parts replayed alone on the same inputs:
   backbone streaming, the student's and the teacher's calls, the metrics. The difference is the
   harness's own cost; the breakdown says where it is. The first cell of a process also pays the
   grid's shared work (teacher embeddings of every enrollment and target, speaker-verification
   crops, MAC counts), which later cells find memoised.
3. **metrics**: PESQ-WB + STOI + ESTOI of the same utterances by the suite's
   ``evaluate_utterances`` with 1 and 2 worker processes, and by torchmetrics' functional metrics
   called serially; then each metric alone (SI-SDR, PESQ-WB, STOI, ESTOI, DNSMOS P.835 + P.808,
   pDNSMOS) in this process on one thread: CPU seconds per utterance and per second of audio, on
   4 s utterances (the short test mixtures) and 16 s ones (the streams). DNSMOS scores 9.01 s
   windows of a clip repeated to at least that length, so a 4 s clip costs about what a 16 s one does.
4. **refiner**: the main grid's backbone (``pdfnet2/cpu``) streaming one 0.5 s block at a time,
   alone (static), with the window student (block + 1.5 s context per block), the streaming
   student (each block once) and the teacher oracle: extra MACs/s and extra wall time as a
   fraction of the backbone's, per-block latency p50/p95 after a warm-up, throughput of one
   stream and of a batch of 16.
5. **scale** (only when asked: ``--only scale``, written to ``results/perf_scale``): start-up
   (cold and warm) and resident memory while training mixtures are drawn, on synthetic manifest
   corpora of 10 h, 100 h and 1000 h of rows (``--scale-hours``); :mod:`bench.perf_scale`.

Section 4's models are randomly initialised (speed and MAC counts do not depend on the weights);
sections 1-2 use the smoke grid's, trained for a few steps; sections 3-4 stream the smoke grid's
test audio (synthetic audio without the cache section). Everything runs with ``--threads`` torch
intra-op threads (default 1). ``--quick`` keeps the whole run within about 5 minutes on 2 idle
cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.audio import SR

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "ablations" / "smoke.yaml"
BLOCK_S = 0.5
CONTEXT_S = 1.5
# --quick trains the smoke grid's backbones and students for fewer steps (speed needs no quality)
QUICK_SMOKE = ["pse.train_steps=10", "pse.val_every=5", "distill.steps=10", "distill.val_every=5"]


# --------------------------------------------------------------------------- helpers
def _clock(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Median wall seconds of ``repeats`` calls of ``fn`` and the last result."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def environment() -> dict[str, Any]:
    """Device, cores, torch threads and the load average (contention) at the start."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else
        f"cpu:{platform.processor() or platform.machine()}",
        "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_avg_1m": round(load[0], 2), "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- 1. cache
def smoke_cache(work: Path, overrides: list[str]) -> dict[str, Any]:
    """Cold then warm ``bench.run`` of the smoke grid in a fresh cache (subprocesses)."""
    cache, out = work / "cache", work / "out"
    cmd = [sys.executable, "-m", "bench.run", "--grid", str(SMOKE), "--cache-dir", str(cache), "--out", str(out),
           "--no-progress", "--no-figures"]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, PSE_KD_CACHE=str(cache), HF_HUB_OFFLINE="1")
    res: dict[str, Any] = {"command": " ".join(["python", *cmd[1:]])}
    for phase in ("cold", "warm"):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        res[f"{phase}_s"] = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"smoke grid ({phase}) exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    import pandas as pd

    cells = pd.read_csv(out / "cells.csv")
    cols = [c for c in ("system", "alpha", "student_mode", "rtf", "block_ms_p50", "block_ms_p95", "batch_rtf",
                        "peak_mem_mb") if c in cells]
    res["cells"] = cells[cols].to_dict("records")
    res["cache"], res["out"] = str(cache), str(out)
    return res


# --------------------------------------------------------------------------- 2. harness
class _Recorder:
    """Wraps a callable, recording its inputs and the time spent in it."""

    def __init__(self, fn: Callable[..., Any], keep: bool = True) -> None:
        self.fn, self.keep = fn, keep
        self.calls: list[tuple[tuple, dict]] = []
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.keep:
            self.calls.append((args, kwargs))
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def _smoke_cells(cache: Path, overrides: list[str]) -> list:
    """The smoke grid's refining student cells (alpha > 0), one per loss."""
    from bench.config import Grid
    from bench.refine import uses_student

    cells = [c.config for c in Grid.load(str(SMOKE), [*overrides, f"cache_dir={cache}"]).cells()
             if uses_student(c.config) and c.config.refine.alpha > 0]
    if len(cells) < 2:
        raise RuntimeError("the smoke grid needs two refining student cells")
    return cells


def harness(cache: Path, device: str, overrides: list[str]) -> dict[str, Any]:
    """The pipeline's evaluation of a cell vs the sum of its pure parts replayed alone: the first
    cell of a process (it also pays the grid's shared work: the teacher's embeddings of every
    enrollment and target and its speaker-verification crops) and a second cell (another student)."""
    import bench.pipeline as pipeline
    from bench.cache import Cache

    cells = _smoke_cells(cache, overrides)
    p = pipeline.Pipeline(Cache(cache), device=device, progress=False)
    for cfg in cells[:2]:  # loading is not evaluation: stages first
        p.pse(cfg), p.student(cfg), p.teacher(cfg)
        for cond in cfg.eval.conditions:
            p.eval_set(cfg, cond)
    return {"first cell": _measure_cell(p, cells[0]), "next cell": _measure_cell(p, cells[1])}


def _measure_cell(p, cfg) -> dict[str, Any]:
    import bench.metrics.quality as quality
    import bench.refine as refine

    model, _ = p.pse(cfg)
    student, _ = p.student(cfg)
    teacher = p.teacher(cfg)
    rec = {"teacher": _Recorder(teacher.embed), "student": _Recorder(student.forward),
           "metrics": _Recorder(quality.evaluate_utterances), "streaming": _Recorder(refine.enhance_streaming, False)}
    names = ("complexity", "speaker_metrics", "stream_timing", "start_embeddings", "target_embeddings")
    spans = {k: _Recorder(getattr(p, k), False) for k in names}
    saved = (teacher.embed, student.forward, quality.evaluate_utterances, refine.enhance_streaming)
    teacher.embed, student.forward = rec["teacher"], rec["student"]
    quality.evaluate_utterances, refine.enhance_streaming = rec["metrics"], rec["streaming"]
    for k, r in spans.items():
        setattr(p, k, r)
    try:
        total, _ = _clock(lambda: p._evaluate(cfg))
    finally:
        teacher.embed, student.forward, quality.evaluate_utterances, refine.enhance_streaming = saved
        for k in names:
            delattr(p, k)
    parts = _replay(p, cfg, model, student, teacher, rec)
    audio = sum(len(m.mixture) for c in cfg.eval.conditions for m in p.eval_set(cfg, c)) / SR
    inside = {f"{k} (all calls)": r.seconds for k, r in rec.items()}
    inside.update({f"Pipeline.{k}": r.seconds for k, r in spans.items()})
    return {"cell": refine.system_name(cfg), "audio_s": audio, "harness_s": total, "parts": parts,
            "parts_sum_s": sum(parts.values()), "overhead": total / sum(parts.values()) - 1.0, "inside": inside,
            "backbone": f"{cfg.pse.name}/{cfg.pse.size}"}


def _replay(p, cfg, model, student, teacher, rec: dict[str, _Recorder]) -> dict[str, float]:
    """The pure parts alone: backbone streaming (no refiner) over the cell's test mixtures in the
    harness's batches, every recorded student and teacher call, the recorded metric calls."""
    import torch

    from bench.pipeline import EVAL_BATCH
    from bench.refine import enhance_streaming

    def backbone() -> None:
        for cond in cfg.eval.conditions:
            ms = p.eval_set(cfg, cond)
            e0_all = p.start_embeddings(cfg, cond)
            for i in range(0, len(ms), EVAL_BATCH):
                mix = torch.from_numpy(np.stack([m.mixture for m in ms[i : i + EVAL_BATCH]]))
                e0 = torch.from_numpy(e0_all[i : i + EVAL_BATCH])
                enhance_streaming(model, mix, e0, None, cfg.refine.block_s)

    def calls(fn: Callable[..., Any], recorded: list) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for args, kwargs in recorded:
                    fn(*args, **kwargs)
        return run

    from bench.metrics.quality import evaluate_utterances

    return {
        "backbone": _clock(backbone)[0],
        "student": _clock(calls(student.forward, rec["student"].calls))[0],
        "teacher": _clock(calls(teacher.embed, rec["teacher"].calls))[0],
        "metrics": _clock(calls(evaluate_utterances, rec["metrics"].calls))[0],
    }


# --------------------------------------------------------------------------- 3. metrics
def _clips(cache: Path | None, seconds: float = 4.0, n: int = 8) -> tuple[list, str]:
    """(mixture, target) pairs: the smoke grid's test mixtures, else synthetic speech-like ones."""
    clips: list[tuple[np.ndarray, np.ndarray]] = []
    if cache is not None:
        from bench.data.mix import load_eval_set

        for f in sorted(Path(cache, "evalset").glob("*/set.npz")):
            clips += [(m.mixture, m.target) for m in load_eval_set(f) if len(m.mixture)]
    if clips:
        return clips, "smoke-grid test mixtures (mixture as the estimate)"
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    for _ in range(n):
        f0 = rng.uniform(100, 220)
        speech = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
        speech *= (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > 0).astype(float)
        ref = (0.1 * speech).astype(np.float32)
        clips.append((ref + 0.05 * rng.standard_normal(t.size).astype(np.float32), ref))
    return clips, "synthetic (harmonic bursts in noise)"


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return np.tile(x, int(np.ceil(n / len(x))))[:n].astype(np.float32)


def metric_items(cache: Path | None, n: int, seconds: float) -> tuple[list, str]:
    """``n`` (estimate, reference, mixture) items of ``seconds`` each (clips cut or tiled)."""
    clips, source = _clips(cache, seconds, n)
    need = int(seconds * SR)
    items = []
    for i in range(n):
        mix, ref = clips[i % len(clips)]
        items.append((_fit(mix, need), _fit(ref, need), _fit(mix, need)))
    return items, source


def metrics(items: list, repeats: int) -> dict[str, Any]:
    """Suite (1 and 2 processes) vs torchmetrics functional (serial) on the same items."""
    import torch
    from torchmetrics.functional.audio import (
        perceptual_evaluation_speech_quality as tm_pesq,
    )
    from torchmetrics.functional.audio import (
        short_time_objective_intelligibility as tm_stoi,
    )

    from bench.metrics.quality import evaluate_utterances

    def torchmetrics_serial() -> None:
        for est, ref, _ in items:
            p, r = torch.from_numpy(est), torch.from_numpy(ref)
            tm_pesq(p, r, SR, "wb")
            tm_stoi(p, r, SR, extended=False)
            tm_stoi(p, r, SR, extended=True)

    runs = {"suite_1proc": lambda: evaluate_utterances(items, workers=1),
            "suite_2proc": lambda: evaluate_utterances(items, workers=2), "torchmetrics_serial": torchmetrics_serial}
    evaluate_utterances(items[:2], workers=2)  # warm-up: imports, pool start-up paths
    torchmetrics_serial()
    best: dict[str, tuple[float, float, float]] = {}
    for _ in range(max(1, repeats)):  # interleaved, best of each: a busy machine's noise only adds
        for k, fn in runs.items():
            t = _cpu_clock(fn)
            best[k] = min(best.get(k, t), t)
    out: dict[str, Any] = {"n": len(items), "seconds_each": len(items[0][0]) / SR}
    for k, (wall, own, children) in best.items():
        out[f"{k}_s"], out[f"{k}_cpu_s"], out[f"{k}_worker_cpu_s"] = wall, own, children
    out["speedup_2_vs_1"] = out["suite_1proc_s"] / out["suite_2proc_s"]
    out["speedup_2_vs_torchmetrics"] = out["torchmetrics_serial_s"] / out["suite_2proc_s"]
    # what 2 idle cores would give: this process' own work, then the workers' work split in two
    idle_2proc = out["suite_2proc_cpu_s"] + out["suite_2proc_worker_cpu_s"] / 2
    out["projected_speedup_2_vs_1_idle"] = (out["suite_1proc_cpu_s"] + out["suite_1proc_worker_cpu_s"]) / idle_2proc
    return out


COST_METRICS = ("si_sdr", "pesq", "stoi", "estoi", "dnsmos", "pdnsmos")


def metric_costs(items: list, metrics: tuple[str, ...] = COST_METRICS) -> dict[str, Any]:
    """CPU seconds of each metric computed alone by ``evaluate_utterances`` in this process (one
    thread; ``si_sdr``: SI-SDR(i) only, which every other row includes), per item and per second
    of audio, after a warm-up item (imports, ONNX sessions)."""
    from bench.metrics.dnsmos import windows
    from bench.metrics.quality import evaluate_utterances

    off = {"pesq": False, "stoi": False, "estoi": False, "dnsmos": False, "pdnsmos": False}
    extra = [m for m in metrics if m != "si_sdr"]
    evaluate_utterances(items[:1], workers=1, **{**off, **dict.fromkeys(extra, True)})
    audio_s = sum(len(est) for est, _, _ in items) / SR
    out: dict[str, Any] = {"n": len(items), "seconds_each": len(items[0][0]) / SR,
                           "dnsmos_windows_each": len(windows(items[0][0]))}
    for m in metrics:
        flags = off if m == "si_sdr" else {**off, m: True}
        t0, w0 = time.process_time(), time.perf_counter()
        evaluate_utterances(items, workers=1, **flags)
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        out[m] = {"cpu_s_per_item": cpu / len(items), "cpu_s_per_audio_s": cpu / audio_s,
                  "wall_s_per_item": wall / len(items)}
    return out


def _cpu_clock(fn: Callable[[], Any]) -> tuple[float, float, float]:
    """(wall s, CPU s of this process, CPU s of the child processes it reaped) of ``fn()``."""
    import resource

    def cpu(who: int) -> float:
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    w0, s0, c0 = time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    fn()
    return time.perf_counter() - w0, cpu(resource.RUSAGE_SELF) - s0, cpu(resource.RUSAGE_CHILDREN) - c0


# --------------------------------------------------------------------------- 4. refiner
def _refiner_models(device: str):
    """The main grid's backbone and student (random weights) and the GE2E teacher."""

    from bench.config import TeacherConfig
    from bench.pse.pdfnet2 import PDFNet2
    from bench.students.tiny import TinyStudent
    from bench.teachers import load_teacher
    from bench.trainloop import seed_everything

    seed_everything(0)
    teacher = load_teacher(TeacherConfig(), None, None, device)
    model = PDFNet2(emb_dim=teacher.dim, size="cpu").to(device).eval()
    student = TinyStudent(teacher.dim).to(device).eval()
    return model, student, teacher


def refiner(stream: np.ndarray, device: str, repeats: int) -> dict[str, Any]:
    """Backbone alone vs + window student, + streaming student, + teacher oracle (batch 1)."""
    import torch

    from bench.metrics.complexity import backbone_macs_per_second
    from bench.refine import block_samples, cost_variants, time_streaming

    model, student, teacher = _refiner_models(device)
    pse_macs = backbone_macs_per_second(model)
    block = block_samples(BLOCK_S, model.hop)
    variants = cost_variants(student, teacher, alpha=0.1, context_s=CONTEXT_S)
    x = torch.from_numpy(stream[None]).to(device)
    e0 = torch.nn.functional.normalize(torch.randn(1, teacher.dim), dim=-1).to(device)
    batch = torch.cat([x] * 16)
    best: dict[str, Any] = {}
    wall16: dict[str, float] = {}
    for _ in range(max(1, repeats)):  # interleaved, best of each: a busy machine's noise only adds
        for name, r in variants.items():
            t = time_streaming(model, x, e0, r, BLOCK_S, warmup_s=1.0, threads=None)
            best[name] = t if name not in best or t.wall_s < best[name].wall_s else best[name]
            wall16[name] = min(wall16.get(name, float("inf")), _clock(lambda r=r: _stream_batch(model, batch, e0, r))[0])
    rows: dict[str, dict[str, float]] = {}
    for name, r in variants.items():
        extra = r.count_extra_macs(block) if r.updates_embedding else 0.0
        rows[name] = {"extra_macs_per_s": extra, **best[name].as_dict(), "x_realtime_1": 1.0 / best[name].rtf,
                      "x_realtime_16": 16 * batch.shape[1] / SR / wall16[name]}
    base = rows["backbone alone (static)"]
    for row in rows.values():
        row["extra_macs_frac"] = row["extra_macs_per_s"] / pse_macs
        row["extra_wall_frac"] = row["wall_s"] / base["wall_s"] - 1.0
    return {"pse_macs_per_s": pse_macs, "stream_s": len(stream) / SR, "block_s": block / SR,
            "rows": rows}


def _stream_batch(model, batch, e0, r) -> None:
    from bench.refine import enhance_streaming

    enhance_streaming(model, batch, e0.expand(batch.shape[0], -1), r, BLOCK_S)


def refiner_stream(cache: Path | None, seconds: float) -> np.ndarray:
    """A test stream of ``seconds``: the smoke grid's test mixtures back to back (or synthetic)."""
    clips, _ = _clips(cache, seconds, 1)
    return _fit(np.concatenate([m for m, _ in clips]), int(seconds * SR))


# --------------------------------------------------------------------------- report
def _f(v: Any, fmt: str = ".3g") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and np.isfinite(v) else str(v)


def tables(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every section present in ``res``."""
    out = []
    env = res["environment"]
    out.append(("environment", ["key", "value"], [[k, str(v)] for k, v in env.items()]))
    if "cache" in res:
        c = res["cache"]
        out.append(("smoke grid, cold vs warm cache (python -m bench.run, subprocesses)", ["run", "wall s"],
                    [["cold (empty cache)", _f(c["cold_s"], ".1f")], ["warm (same cache)", _f(c["warm_s"], ".1f")]]))
        rows = [[str(r.get("system")), _f(r.get("alpha")), str(r.get("student_mode", "") or ""),
                 _f(r.get("rtf")), _f(r.get("block_ms_p50")), _f(r.get("block_ms_p95")), _f(r.get("batch_rtf")),
                 _f(r.get("peak_mem_mb"), ".0f")] for r in c["cells"]]
        out.append(("smoke grid, per cell (leaderboard columns)", ["system", "alpha", "student", "rtf",
                    "block ms p50", "block ms p95", "batch rtf", "peak MB"], rows))
    for which, h in res.get("harness", {}).items():
        rows = [[f"harness: Pipeline._evaluate ({h['cell']}, {h['backbone']}, {h['audio_s']:.0f} s audio)",
                 _f(h["harness_s"], ".2f"), _f(h["audio_s"] / h["harness_s"], ".1f")]]
        rows += [[f"  pure part alone: {k}", _f(v, ".2f"), _f(h["audio_s"] / v, ".1f") if v else ""]
                 for k, v in h["parts"].items()]
        rows += [["  sum of pure parts", _f(h["parts_sum_s"], ".2f"), _f(h["audio_s"] / h["parts_sum_s"], ".1f")],
                 ["  harness overhead over the parts", f"{100 * h['overhead']:+.0f} %", ""]]
        rows += [[f"  inside the harness: {k}", _f(v, ".2f"), ""] for k, v in h["inside"].items()]
        out.append((f"harness throughput vs its pure parts, {which}", ["what", "wall s", "x real time"], rows))
    if "metrics" in res:
        m = res["metrics"]
        n = m["n"]
        rows = [[k, _f(m[f"{k}_s"], ".2f"), _f(n / m[f"{k}_s"], ".2f")]
                for k in ("suite_1proc", "suite_2proc", "torchmetrics_serial")]
        rows += [["speed-up, suite 2 vs 1 process", _f(m["speedup_2_vs_1"], ".2f") + "x", ""],
                 ["speed-up, suite 2 processes vs torchmetrics serial", _f(m["speedup_2_vs_torchmetrics"], ".2f") + "x",
                  ""],
                 ["projected on 2 idle cores (CPU time), suite 2 vs 1 process",
                  _f(m["projected_speedup_2_vs_1_idle"], ".2f") + "x", ""]]
        out.append((f"metrics: PESQ-WB + STOI + ESTOI of {n} utterances x {m['seconds_each']:.0f} s ({m['source']})",
                    ["who", "wall s", "utt/s"], rows))
    if res.get("metric_costs"):
        rows = [[k, f"{c['n']} x {c['seconds_each']:.0f} s", _f(c[k]["cpu_s_per_item"], ".3g"),
                 _f(c[k]["cpu_s_per_audio_s"], ".3g"), _f(c[k]["wall_s_per_item"], ".3g")]
                for c in res["metric_costs"] for k in COST_METRICS if k in c]
        out.append(("metrics, each alone in one process (one thread; every row includes SI-SDR(i))",
                    ["metric", "utterances", "CPU s / utt", "CPU s / audio s", "wall s / utt"], rows))
    if res.get("evalcost"):
        from bench.perf_eval import HEADER, rows

        src = next(iter(res["evalcost"].values()))["source"]
        out.append((f"evaluation cost per mixture: slow metrics on every item (before) vs on a subset "
                    f"(eval.quality_n) vs an output scored before (memo); CPU s on one thread ({src})", HEADER,
                    rows(res["evalcost"])))
    if "refiner" in res:
        r = res["refiner"]
        rows = [[k, _f(v["extra_macs_per_s"] / 1e6, ".2f"), f"{100 * v['extra_macs_frac']:.1f} %",
                 f"{100 * v['extra_wall_frac']:+.0f} %", _f(v["rtf"], ".3f"), _f(v["block_ms_p50"], ".1f"),
                 _f(v["block_ms_p95"], ".1f"), _f(v["x_realtime_1"], ".0f"), _f(v["x_realtime_16"], ".0f")]
                for k, v in r["rows"].items()]
        out.append((f"refiner cost, pdfnet2/cpu backbone ({r['pse_macs_per_s'] / 1e6:.1f} MMAC/s), blocks of "
                    f"{r['block_s']} s, one {r['stream_s']:.0f} s stream after 1 s warm-up",
                    ["system", "extra MMAC/s", "of backbone MACs", "extra wall", "rtf", "block ms p50",
                     "block ms p95", "x RT (1 stream)", "x RT (16 streams)"], rows))
    if "scale" in res:
        from bench.perf_scale import tables as scale_tables

        out += scale_tables(res["scale"])
    return out


def render(res: dict[str, Any], markdown: bool) -> str:
    lines = []
    for title, header, rows in tables(res):
        if markdown:
            lines += [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
            lines += [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
            lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in rows]
        lines.append("")
    for note in res.get("notes", []):
        lines.append(f"- {note}" if markdown else f"note: {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small n: about 5 minutes on 2 idle cores")
    p.add_argument("--out", default=None,
                   help="write <out>.json and <out>.md (default: results/perf, results/perf_scale for --only scale)")
    p.add_argument("--only", default="cache,harness,metrics,refiner",
                   help="comma-separated sections (cache, harness, metrics, refiner, evalcost, scale); harness needs "
                        "cache; evalcost (the cost of a cell's scoring with and without the quality subset and the "
                        "memo, about 3 minutes, --quick under 1) and scale (about 10-15 minutes on 2 idle cores, "
                        "--quick about 2) run only when named")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--n-metrics", type=int, default=None, help="utterances in the metric benchmark")
    p.add_argument("--stream-s", type=float, default=None, help="length of the timed stream (s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads of this process and of the smoke runs (PSE_KD_THREADS); default 1: "
                        "per-block operations are too small to gain from more, and on a busy machine waiting "
                        "threads cost 10-100x; 0: the suite's default (PSE_KD_THREADS or all cores)")
    p.add_argument("--keep", action="store_true", help="keep the temporary smoke cache (path printed)")
    p.add_argument("--smoke-cache", default="", metavar="DIR",
                   help="without the cache section: a cache holding the smoke grid's stages (e.g. one kept "
                        "with --keep) for the harness section and as the source of test audio")
    from bench import perf_scale as ps

    g = p.add_argument_group("scale section")
    g.add_argument("--scale-hours", default=None,
                   help="comma-separated corpus sizes in hours of manifest rows (default "
                        f"{','.join(f'{h:g}' for h in ps.DEFAULT_HOURS)}; --quick {','.join(f'{h:g}' for h in ps.QUICK_HOURS)})")
    g.add_argument("--scale-row-s", type=float, default=ps.ROW_S, help=f"seconds per row (default {ps.ROW_S:g})")
    g.add_argument("--scale-max-rows", type=int, default=ps.MAX_ROWS,
                   help=f"a size needing more rows gets longer ones instead (default {ps.MAX_ROWS})")
    g.add_argument("--scale-speakers", type=int, default=ps.SPEAKERS, help=f"speakers (default {ps.SPEAKERS})")
    g.add_argument("--scale-files", type=int, default=ps.FILES,
                   help=f"distinct WAV files the rows hard-link to (default {ps.FILES})")
    g.add_argument("--scale-draws", type=int, default=None,
                   help=f"training mixtures per memory run (default {ps.DRAWS}; --quick {ps.QUICK_DRAWS})")
    g.add_argument("--scale-workers", default=",".join(map(str, ps.WORKERS)),
                   help="comma-separated DataLoader worker counts of the memory runs (default 0,2)")
    return p


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    from bench.runtime import pick_device, set_threads

    device = pick_device(args.device)
    if args.threads:
        os.environ["PSE_KD_THREADS"] = str(args.threads)  # the smoke runs inherit it
    set_threads(args.threads or None)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    n_metrics = args.n_metrics or (8 if args.quick else 24)
    stream_s = args.stream_s or (8.0 if args.quick else 16.0)
    repeats = 2 if args.quick else 3
    res: dict[str, Any] = {"environment": environment(), "command": "python -m bench.perf " + " ".join(
        sys.argv[1:] if argv is None else argv), "notes": [] if only == {"scale"} else [
            "speed numbers do not need trained weights: the refiner and metric sections use randomly initialised "
            "models; the smoke grid's are trained for a few steps"]}
    work = Path(tempfile.mkdtemp(prefix="pse-kd-perf-"))
    cache: Path | None = Path(args.smoke_cache) if args.smoke_cache else None
    overrides = QUICK_SMOKE if args.quick and "cache" in only else []  # what the cache section trains
    t0 = time.perf_counter()
    if "cache" in only:
        res["cache"] = smoke_cache(work, overrides)
        if overrides:
            res["notes"].append("--quick: the smoke grid with " + ", ".join(QUICK_SMOKE) + " (fewer training steps)")
        cache = Path(res["cache"]["cache"])
    if "harness" in only and cache is not None:
        res["harness"] = harness(cache, device, overrides)
    if "metrics" in only:
        items, source = metric_items(cache, n_metrics, 4.0)
        res["metrics"] = {**metrics(items, repeats), "source": source}
        n_cost = 2 if args.quick else 6
        res["metric_costs"] = [{**metric_costs(metric_items(cache, n_cost, secs)[0]), "source": source}
                               for secs in (4.0, 16.0)]
    if "refiner" in only:
        res["refiner"] = refiner(refiner_stream(cache, stream_s), device, repeats)
    if "evalcost" in only:
        from bench.perf_eval import EVALCOST_SETS, eval_costs

        items, source = metric_items(cache, 6 if args.quick else 24, 4.0)
        subset = max(1, len(items) // 4)
        res["evalcost"] = {name: {**eval_costs(items, subset, flags), "source": source}
                           for name, flags in EVALCOST_SETS.items()}
    if "scale" in only:
        from bench import perf_scale as ps

        hours = tuple(float(h) for h in args.scale_hours.split(",")) if args.scale_hours else (
            ps.QUICK_HOURS if args.quick else ps.DEFAULT_HOURS)
        draws = args.scale_draws or (ps.QUICK_DRAWS if args.quick else ps.DRAWS)
        res["scale"] = ps.scale(hours, args.scale_row_s, args.scale_max_rows, args.scale_speakers, args.scale_files,
                                draws, tuple(int(w) for w in args.scale_workers.split(",")))
        res["notes"].append(ps.NOTE)
    res["total_s"] = time.perf_counter() - t0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    res["environment"]["load_avg_1m_end"] = round(load, 2)
    # the scale section's own processes (2 loader workers on 2 cores) raise the load at its end; it
    # measures the CPU other processes used during each size instead ("other jobs, cores")
    busy = [load] if only != {"scale"} else [2.0 * c for c in (r.get("other_cores", 0.0) for r in res["scale"]["sizes"])
                                             if np.isfinite(c)]
    if max([res["environment"]["load_avg_1m"], *busy]) > 1.5:
        res["notes"].append(f"measured while other jobs ran (load average {res['environment']['load_avg_1m']} at "
                            f"the start, {load:.2f} at the end on {os.cpu_count()} cores): times are inflated and "
                            "parallel speed-ups understated")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        res["notes"].append(f"smoke cache kept in {work}")
    return res


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out is None:
        only = {x.strip() for x in args.only.split(",") if x.strip()}
        args.out = "results/perf_scale" if only == {"scale"} else "results/perf"
    res = run(args, argv)
    text = render(res, markdown=False)
    print(text)
    print(f"total {res['total_s']:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(f"`{res['command']}`\n\n" + render(res, markdown=True) +
                                      f"\n\ntotal {res['total_s']:.0f} s\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
