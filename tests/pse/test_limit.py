"""pse.atten_lim_db: the attenuation-limit wrapper keeps the backbone contract and the keys."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.cache import config_hash
from bench.config import ConfigError, ExperimentConfig, PSEConfig, validate
from bench.pipeline import eval_slice
from bench.pse.limit import AttenuationLimit, mix_weight, with_limit
from bench.pse.pdfnet2 import make_pdfnet2
from bench.pse.train import training_slice

D, HOP = 8, 160


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return make_pdfnet2(PSEConfig(size="tiny"), D).eval()


def test_off_is_the_backbone_itself():
    m = _tiny()
    assert with_limit(m, 0.0) is m and mix_weight(0.0) == 0.0
    assert mix_weight(20.0) == pytest.approx(0.1)


def test_output_is_the_mix_of_enhanced_and_the_latency_aligned_mixture():
    inner = _tiny()
    lim = AttenuationLimit(inner, 20.0)
    torch.manual_seed(1)
    x, e = torch.randn(2, 8 * HOP), torch.randn(2, D)
    lat = inner.latency_samples
    delayed = torch.cat([torch.zeros(2, lat), x[:, :-lat]], dim=1)
    with torch.no_grad():
        want = 0.9 * inner(x, e) + 0.1 * delayed
        got = lim(x, e)
    assert torch.allclose(got, want, atol=1e-6)
    assert lim.latency_samples == lat and lim.hop == inner.hop and lim.emb_dim == inner.emb_dim


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=5))
def test_streaming_equals_offline(cuts):
    lim = AttenuationLimit(_tiny(), 12.0)
    torch.manual_seed(2)
    n = sum(cuts) * HOP
    x, e = torch.randn(1, n), torch.randn(1, D)
    with torch.no_grad():
        full = lim(x, e)
        state, outs, pos = lim.init_state(1), [], 0
        for c in cuts:
            y, state = lim.step(x[:, pos : pos + c * HOP], e, state)
            outs.append(y)
            pos += c * HOP
    assert torch.allclose(torch.cat(outs, dim=1), full, atol=1e-5)


def test_keys_training_unchanged_evaluation_changed():
    a, b, off = ExperimentConfig(), ExperimentConfig(), ExperimentConfig()
    b.pse.atten_lim_db, off.pse.atten_lim_db = 20.0, 0.0
    assert training_slice(a.pse) == training_slice(b.pse) == training_slice(off.pse)  # weights do not depend on it
    assert "pse_atten_lim_db" not in eval_slice(off)  # keys made before the limit existed hold with it off
    keys = [config_hash(eval_slice(c)) for c in (a, b, off)]
    assert len(set(keys)) == 3  # each limit is another evaluation


def test_bad_limit_is_named():
    cfg = ExperimentConfig()
    cfg.pse.atten_lim_db = -3.0
    with pytest.raises(ConfigError, match=r"pse\.atten_lim_db"):
        validate(cfg)
