"""Timing and memory of a measured block mean what their names say."""

from __future__ import annotations

import numpy as np
import pytest

from bench.runtime import measure


def test_peak_memory_is_per_block_not_the_process_lifetime():
    with measure("cpu") as big:
        a = np.ones(40_000_000)  # 320 MB
        a[::4096] += 1.0
    del a
    with measure("cpu", audio_s=2.0) as small:
        b = np.ones(1000)
    if small.mem_kind != "cpu_peak_rss_block":
        pytest.skip("this kernel does not let a process reset its peak RSS")
    assert big.peak_mem_mb - small.peak_mem_mb > 200  # the second block does not inherit the first's peak
    assert small.wall_s >= 0 and small.rtf == pytest.approx(small.wall_s / 2.0)
    del b
