"""Operating levels (``level: NAME``, presets/levels/) and the mixture shares they set."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest

from bench.cache import config_hash
from bench.config import ConfigError, ExperimentConfig, MixConfig, level_names
from bench.data.mix import MixtureSampler
from tests._data_helpers import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_speakers=8)


def test_levels_listed_and_field_expands():
    assert {"hard", "field"} <= set(level_names())
    cfg = ExperimentConfig.from_dict({"level": "field"})
    assert cfg.mix.level == "field"
    assert cfg.mix.shares == [0.4, 0.2, 0.4]
    assert "white" not in cfg.mix.noise_types
    assert cfg.eval.stream_snr_db == [5.0, 25.0]
    assert ExperimentConfig.from_dict({"level": "hard"}).mix == MixConfig()


def test_explicit_values_win_over_the_level():
    cfg = ExperimentConfig.from_dict({"level": "field", "mix": {"snr_db": [10.0, 12.0]}})
    assert cfg.mix.snr_db == [10.0, 12.0] and cfg.mix.shares == [0.4, 0.2, 0.4]


def test_unknown_level_names_the_choices():
    with pytest.raises(ConfigError, match=r"level='loud'.*choices: .*field.*hard"):
        ExperimentConfig.from_dict({"level": "loud"})
    with pytest.raises(ConfigError, match="mix.level"):
        ExperimentConfig.from_dict({"mix": {"level": "loud"}})


@pytest.mark.parametrize("shares, n_int, msg", [
    ([0.5, 0.5], [1], "three non-negative shares"),
    ([0.5, 0.6, -0.1], [1], "three non-negative shares"),
    ([0.5, 0.2, 0.2], [1], "summing to 1"),
    ([0.4, 0.2, 0.4], [0, 1], "counts >= 1"),
])
def test_bad_shares_are_refused(shares, n_int, msg):
    with pytest.raises(ConfigError, match=msg):
        ExperimentConfig.from_dict({"mix": {"shares": shares, "n_interferers": n_int}})


def test_hard_level_keys_unchanged():
    """The new fields stay out of every key and of to_dict at their defaults, so the cached
    stages and the zoo keep their keys."""
    old = {k: v for k, v in asdict(MixConfig()).items() if k not in ("shares", "level")}
    assert config_hash(MixConfig()) == config_hash(old)
    assert "shares" not in ExperimentConfig().to_dict()["mix"]
    assert config_hash(ExperimentConfig.from_dict({"level": "field"}).mix) != config_hash(old)
    # a field-level config's dict round-trips (level is recorded as mix.level)
    cfg = ExperimentConfig.from_dict({"level": "field"})
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def _kinds(corpus, shares, n=300):
    cfg = MixConfig(shares=shares, noise_types=["pink"], sir_db=[5.0, 5.0], snr_db=[10.0, 10.0])
    s = MixtureSampler(corpus, "train", cfg, seed=3)
    rng = np.random.default_rng(3)
    out = Counter()
    for _ in range(n):
        m = s.sample(rng, 0.5)
        has_i, has_n = bool(np.any(m.interference)), bool(np.any(m.noise))
        assert (m.meta["sir_db"] is not None) == has_i and (m.meta["snr_db"] is not None) == has_n
        np.testing.assert_allclose(m.mixture, m.target + m.interference + m.noise, atol=1e-6)
        out[(has_i, has_n)] += 1
    return out


def test_shares_give_each_kind_in_its_share(corpus):
    k = _kinds(corpus, [0.4, 0.2, 0.4])
    assert set(k) == {(False, True), (True, False), (True, True)}
    assert abs(k[(False, True)] / 300 - 0.4) < 0.1
    assert abs(k[(True, False)] / 300 - 0.2) < 0.1
    assert _kinds(corpus, [1.0, 0.0, 0.0], 40) == Counter({(False, True): 40})
    assert _kinds(corpus, [0.0, 1.0, 0.0], 40) == Counter({(True, False): 40})


def test_no_shares_always_both_and_same_draws(corpus):
    """Without shares every mixture holds both, and the sampler's draws are those of a sampler
    given all-``both`` shares except for the one share draw: shares=[] draws nothing extra."""
    k = _kinds(corpus, [], 40)
    assert k == Counter({(True, True): 40})
    a = MixtureSampler(corpus, "train", MixConfig(), seed=5).sample(np.random.default_rng(5), 0.5)
    b = MixtureSampler(corpus, "train", MixConfig(), seed=5).sample(np.random.default_rng(5), 0.5)
    c = MixtureSampler(corpus, "train", MixConfig(shares=[0.0, 0.0, 1.0]), seed=5).sample(np.random.default_rng(5), 0.5)
    np.testing.assert_array_equal(a.mixture, b.mixture)
    assert not np.array_equal(a.mixture, c.mixture)  # the share draw moves the stream when shares are set
