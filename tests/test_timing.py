"""The leaderboard's timing columns mean what their names say.

A backbone (and a student) that sleep a known time per call make the expected values known:
``rtf`` is one stream's processing time over its duration (not divided by a batch),
``block_ms_p50/p95`` the compute per block (backbone step + refiner update), ``algo_latency_ms``
the block plus the backbone's latency. Tolerances are one-sided and generous (a slow machine only
adds time), so these are not flaky timing tests.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bench.config import ExperimentConfig, RefineConfig
from bench.refine import EMARefiner, StaticRefiner, time_streaming
from bench.refine.streaming import enhance_streaming

SLEEP = 0.01  # per backbone step
BLOCK_S = 0.05  # 800 samples at 16 kHz: 20 blocks per second
EXPECTED_RTF = SLEEP / BLOCK_S  # 0.2


class SleepPSE(nn.Module):
    """Identity backbone that sleeps ``SLEEP`` per streaming step; hop 16, latency 48 samples."""

    hop = 16
    latency_samples = 48
    emb_dim = 3
    personalized = True

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = 0

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> dict:
        return {}

    def step(self, block: torch.Tensor, emb: torch.Tensor | None, state: dict):
        self.calls += 1
        time.sleep(SLEEP)
        return block * self.w, state


class SleepStudent(nn.Module):
    def __init__(self, sleep: float) -> None:
        super().__init__()
        self.sleep = sleep
        self.proj = nn.Linear(1, 3)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        time.sleep(self.sleep)
        return self.proj(wav.mean(-1, keepdim=True))


def _stream(seconds: float, batch: int = 1) -> torch.Tensor:
    return 0.1 * torch.randn(batch, int(seconds * 16000), generator=torch.Generator().manual_seed(0))


def test_rtf_and_block_latency_of_a_backbone_with_a_known_cost():
    model = SleepPSE()
    t = time_streaming(model, _stream(1.0), torch.ones(1, 3), StaticRefiner(), BLOCK_S, warmup_s=0.1)
    assert model.calls == 2 + 20  # warm-up (0.1 s: two blocks) then the timed stream
    assert len(t.block_ms) == 20 and t.audio_s == pytest.approx(1.0) and t.warmup_s == pytest.approx(0.1)
    assert EXPECTED_RTF * 0.95 <= t.rtf <= EXPECTED_RTF + 0.3
    assert 1e3 * SLEEP * 0.95 <= t.block_ms_p50 <= t.block_ms_p95 <= 1e3 * SLEEP + 40.0
    assert t.algo_latency_ms == pytest.approx(1e3 * (800 + 48) / 16000)
    assert t.wall_s == pytest.approx(t.rtf * t.audio_s)


def test_refiner_time_is_part_of_the_block_latency():
    student = SleepStudent(0.005)
    r = EMARefiner(RefineConfig(name="ema", alpha=0.5, context_s=0.0), student)
    t = time_streaming(SleepPSE(), _stream(1.0), torch.ones(1, 3), r, BLOCK_S, warmup_s=0.1)
    # 19 of the 20 blocks are followed by an update (none after the last block)
    assert t.block_ms_p50 >= 1e3 * (SLEEP + 0.005) * 0.95
    assert t.rtf >= (20 * SLEEP + 19 * 0.005) * 0.95


def test_rtf_is_one_stream_not_a_batch_average():
    """Streaming 8 mixtures at once takes about the time of one, so a batch's wall over its total
    audio would understate the real-time factor 8-fold: ``time_streaming`` takes one stream."""
    with pytest.raises(ValueError, match=r"one mixture \[1, T\]"):
        time_streaming(SleepPSE(), _stream(0.5, batch=8), None, None, BLOCK_S)
    times: list[float] = []
    enhance_streaming(SleepPSE(), _stream(1.0, batch=8), None, None, BLOCK_S, block_times=times)
    batch_rtf = sum(times) / 8.0  # what the old "rtf" measured
    assert batch_rtf < EXPECTED_RTF / 2 <= time_streaming(SleepPSE(), _stream(1.0), None, None, BLOCK_S).rtf


def test_pipeline_reports_the_one_stream_timing_of_the_longest_items(tmp_path):
    """``Pipeline.stream_timing`` (the leaderboard's rtf, block_ms_*, algo_latency_ms) streams one
    item of the condition with the longest mixtures."""
    from bench.cache import Cache
    from bench.pipeline import Pipeline

    cfg = ExperimentConfig()
    cfg.eval.conditions = ["clean", "voice_change"]
    lengths = {"clean": 0.5, "voice_change": 1.0}
    sets = {c: [SimpleNamespace(mixture=_stream(s)[0].numpy(), target=_stream(s)[0].numpy())] * 16
            for c, s in lengths.items()}
    p = Pipeline(Cache(tmp_path / "cache"))
    p.eval_set = lambda cfg, cond: sets[cond]
    p.start_embeddings = lambda cfg, cond, start="enrollment": np.ones((16, 3), dtype=np.float32)
    model = SleepPSE()
    t = p.stream_timing(cfg, model, StaticRefiner(), BLOCK_S)
    assert t["timed_audio_s"] == pytest.approx(1.0)  # voice_change's items are the longest
    assert EXPECTED_RTF * 0.95 <= t["rtf"] <= EXPECTED_RTF + 0.3
    assert 1e3 * SLEEP * 0.95 <= t["block_ms_p50"] <= t["block_ms_p95"]
    assert t["algo_latency_ms"] == pytest.approx(53.0)


def test_a_stream_is_timed_on_one_thread_and_the_setting_restored():
    torch.set_num_threads(2)
    try:
        t = time_streaming(SleepPSE(), _stream(0.2), None, None, BLOCK_S, warmup_s=0.05)
        assert t.threads == 1 and torch.get_num_threads() == 2
        assert time_streaming(SleepPSE(), _stream(0.2), None, None, BLOCK_S, threads=None).threads == 2
    finally:
        torch.set_num_threads(1)
