"""Cache keys of the evaluation stages: what an eval set depends on, and nothing else."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bench.cache import Cache, config_hash
from bench.config import ExperimentConfig
from bench.pipeline import EvalSetSpec, Pipeline, eval_slice
from bench.pipeline.keys import mixture_key


def _pipe(tmp_path) -> Pipeline:
    pipe = Pipeline(Cache(tmp_path), device="cpu", progress=False)
    pipe.corpus = lambda cfg: SimpleNamespace(key="corpus-key")  # no corpus build needed
    return pipe


def test_competitor_level_keys_only_the_conditions_it_changes():
    a = ExperimentConfig.from_dict({"eval": {"competing_sir_db": [-5.0, 5.0]}})
    b = ExperimentConfig.from_dict({"eval": {"competing_sir_db": [0.0, 5.0]}})
    for cond in ("competing", "combined"):
        assert EvalSetSpec.of(a, cond).key("k") != EvalSetSpec.of(b, cond).key("k")
    for cond in ("clean", "noisy", "drift"):
        assert EvalSetSpec.of(a, cond).key("k") == EvalSetSpec.of(b, cond).key("k")


def test_keys_are_the_ones_cached_before_the_pipeline_split(tmp_path):
    """Literal keys of the default config, computed by the code before ``bench/pipeline.py`` was
    split into a package (commit a70dda5): cached eval sets, mixture rows and cells stay valid."""
    pipe = _pipe(tmp_path)
    cfg = ExperimentConfig()
    cfg.pse.seed = 0  # the default then (1 now): the cell key holds the backbone's config
    want = {"clean": "b82c5a37a4361028", "competing": "30d28cec12c11df6", "voice_change": "3895bb73b06859ca"}
    assert {c: pipe.evalset_key(cfg, c) for c in want} == want
    assert mixture_key(cfg, "corpus-key") == "a7ff76454d013601"
    assert config_hash(eval_slice(cfg)) == "a4c0e54f37867d76"
    # the eval sets and mixtures do not depend on the backbone's training seed; the cell does
    cfg.pse.seed = 1
    assert {c: pipe.evalset_key(cfg, c) for c in want} == want and mixture_key(cfg, "corpus-key") == "a7ff76454d013601"
    assert config_hash(eval_slice(cfg)) != "a4c0e54f37867d76"


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


def test_streams_that_follow_the_shares_get_new_keys(tmp_path):
    """At a level with ``mix.shares`` the streams now follow them, so their eval sets, the
    mixture scores and the cells get keys other than the ones cached before (literal keys of the
    code before the change); the short mixtures' sets keep theirs, and so does the hard level."""
    pipe = _pipe(tmp_path)
    cfg = ExperimentConfig.from_dict({"level": "field", "eval": {"conditions": ["clean", "voice_change"]}})
    assert pipe.evalset_key(cfg, "clean") == "06b6821b4bef3f5d"
    assert pipe.evalset_key(cfg, "voice_change") != "7be7d86ed23632e9"
    assert mixture_key(cfg, "corpus-key") != "0626857bc5b15a5c"
    assert config_hash(eval_slice(cfg)) != "f4093ad9c4a21ae7"
    short = ExperimentConfig.from_dict({"level": "field", "eval": {"conditions": ["clean"]}})
    assert "stream_shares" not in eval_slice(short)
