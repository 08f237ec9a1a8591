"""Cache keys of the evaluation stages: what an eval set depends on, and nothing else."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bench.cache import Cache
from bench.config import ExperimentConfig
from bench.pipeline import Pipeline


def _pipe(tmp_path) -> Pipeline:
    pipe = Pipeline(Cache(tmp_path), device="cpu", progress=False)
    pipe.corpus = lambda cfg: SimpleNamespace(key="corpus-key")  # no corpus build needed
    return pipe


def test_competitor_level_keys_only_the_conditions_it_changes(tmp_path):
    pipe = _pipe(tmp_path)
    a = ExperimentConfig.from_dict({"eval": {"competing_sir_db": [-5.0, 5.0]}})
    b = ExperimentConfig.from_dict({"eval": {"competing_sir_db": [0.0, 5.0]}})
    for cond in ("competing", "combined"):
        assert pipe._evalset_key(a, cond) != pipe._evalset_key(b, cond)
    for cond in ("clean", "noisy", "drift"):
        assert pipe._evalset_key(a, cond) == pipe._evalset_key(b, cond)


def test_enrollment_embeddings_follow_the_eval_set(tmp_path):
    """Two cells that differ only in the competitor's level must not share memoised embeddings."""
    pipe = _pipe(tmp_path)
    calls: list[float] = []

    def fake_set(cfg, condition):
        level = float(cfg.eval.competing_sir_db[0])
        calls.append(level)
        return [SimpleNamespace(enrollment=np.full(1600, level + 1.0, np.float32), target=np.zeros(1600, np.float32))]

    class Teacher:
        identity = "fake"

        def embed(self, wav):
            return wav[:, :4]

    pipe.eval_set = fake_set
    pipe.teacher = lambda cfg: Teacher()
    a = ExperimentConfig.from_dict({"eval": {"competing_sir_db": [-5.0, 5.0]}})
    b = ExperimentConfig.from_dict({"eval": {"competing_sir_db": [0.0, 5.0]}})
    ea, eb = pipe.enrollment_embeddings(a, "competing"), pipe.enrollment_embeddings(b, "competing")
    assert ea[0, 0] == -4.0 and eb[0, 0] == 1.0
    assert pipe.enrollment_embeddings(a, "competing") is ea  # memoised per eval set
