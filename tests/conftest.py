"""Shared test set-up: one torch thread per test process, an isolated cache root."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


_SWEPT = [0]  # len(sys.modules) after the last sweep: nothing new imported, nothing to sweep


def _drop_broken_lazy_modules() -> None:
    """Remove lazily imported modules whose attribute lookup raises ImportError (speechbrain's
    integrations of optional packages such as k2, registered by importing speechbrain): hypothesis
    reads ``__file__`` of every module in ``sys.modules`` and would fail on them, so a property
    test that ran after the teacher tests failed for a reason outside the code under test."""
    import sys
    import warnings

    if len(sys.modules) == _SWEPT[0]:
        return
    with warnings.catch_warnings():  # the lookup itself makes speechbrain warn about its redirects
        warnings.simplefilter("ignore")
        for name, mod in list(sys.modules.items()):
            try:
                getattr(mod, "__file__", None)
            except ImportError:
                del sys.modules[name]
    _SWEPT[0] = len(sys.modules)


@pytest.fixture(autouse=True)
def _one_thread():
    _drop_broken_lazy_modules()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture
def cache(tmp_path):
    from bench.cache import Cache

    return Cache(tmp_path / "cache")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``ablations/smoke.yaml`` through ``bench.run`` with figures and reports, once per session:
    ``(exit code, results folder, cache folder, seconds)``."""
    from bench import run

    base = tmp_path_factory.mktemp("smoke")
    cache, out = base / "cache", base / "out"
    grid = str(Path(__file__).resolve().parents[1] / "ablations" / "smoke.yaml")
    t0 = time.perf_counter()
    code = run.main(["--grid", grid, "--out", str(out), "--cache-dir", str(cache), "--no-progress"])
    return code, out, cache, time.perf_counter() - t0
