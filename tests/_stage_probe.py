"""A ``--plugins`` module for the multi-worker tests: every stage a worker process computes (each
``Cache.mark_done``) is appended as ``stage key pid`` to ``$PSE_KD_STAGE_LOG``, and with
``$PSE_KD_SLOW_CELL_S`` every cell evaluation first sleeps that long (so a test can kill a
worker in the middle of one)."""

from __future__ import annotations

import os
import time

from bench.cache import Cache
from bench.pipeline import Pipeline

_mark_done = Cache.mark_done
_evaluate = Pipeline.evaluate


def _logged_mark_done(self, stage, key, meta=None, verify=True):
    _mark_done(self, stage, key, meta, verify)
    path = os.environ.get("PSE_KD_STAGE_LOG")
    if path:
        with open(path, "a") as fh:  # one short append: atomic between processes
            fh.write(f"{stage} {key} {os.getpid()}\n")


def _slow_evaluate(self, cfg):
    time.sleep(float(os.environ.get("PSE_KD_SLOW_CELL_S", "0")))
    return _evaluate(self, cfg)


Cache.mark_done = _logged_mark_done
Pipeline.evaluate = _slow_evaluate
