"""PSE backbone contract (shapes, causality, streaming == offline) and train_pse (resume, cache)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import registry
from bench.config import ExperimentConfig, PSEConfig
from bench.metrics.complexity import backbone_macs_per_second
from bench.pse import compensate_latency
from bench.pse import train as pse_train
from bench.pse.pdfnet2 import PDFNet2, make_pdfnet2
from bench.trainloop import FINAL_LR_FRAC

D = 8
HOP = 160


def _tiny(personalized: bool = True, injection: str = "join") -> PDFNet2:
    torch.manual_seed(0)
    return make_pdfnet2(
        PSEConfig(size="tiny", personalized=personalized, injection=injection), D
    ).eval()


def _emb(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(b, D, generator=g), dim=-1)


def _wave(b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(b, t, generator=g)


# --------------------------------------------------------------------------- model contract
def test_registered_and_tiny_size():
    assert registry.get("pse", "pdfnet2") is make_pdfnet2
    m = _tiny()
    assert sum(p.numel() for p in m.parameters()) < 50_000
    assert m.personalized and m.emb_dim == D and m.hop == HOP and m.latency_samples == HOP
    assert backbone_macs_per_second(m) > 0


def test_cpu_wide_is_wider_than_cpu():
    """The ``cpu_wide`` preset: deep filter to 4.8 kHz, a 160-wide GRU (0.63 M params, 83 MMAC/s)."""
    cpu = make_pdfnet2(PSEConfig(size="cpu"), 256)
    wide = make_pdfnet2(PSEConfig(size="cpu_wide"), 256)
    n_cpu, n_wide = (sum(p.numel() for p in m.parameters()) for m in (cpu, wide))
    assert 0.35e6 < n_cpu < 0.45e6 and 0.6e6 < n_wide < 0.66e6
    assert wide.preset.nb_df == 96 and wide.preset.hidden == 160
    assert 75e6 < backbone_macs_per_second(wide) < 90e6


@pytest.mark.parametrize("t", [1600, 1000, 161])
def test_forward_shapes(t):
    m = _tiny()
    with torch.no_grad():
        y = m(_wave(2, t), _emb(2))
    assert y.shape == (2, t) and torch.isfinite(y).all()


def test_paper_preset_size():
    m = make_pdfnet2(PSEConfig(size="paper"), 256)
    n = sum(p.numel() for p in m.parameters())
    assert 0.8 * 2.3e6 <= n <= 1.2 * 2.3e6, n


@pytest.mark.parametrize("t", [1120, 1234])
def test_causal(t):
    """Causal at hop granularity: output[:, :k*hop] depends only on input[:, :k*hop]."""
    m = _tiny()
    x = _wave(1, 3200)
    x2 = x.clone()
    x2[:, t:] = _wave(1, 3200 - t, seed=5)
    with torch.no_grad():
        y, y2 = m(x, _emb(1)), m(x2, _emb(1))
    k = (t // HOP) * HOP
    assert torch.equal(y[:, :k], y2[:, :k])
    assert not torch.allclose(y[:, k + HOP :], y2[:, k + HOP :], atol=1e-4)


def test_identity_reconstruction_and_latency():
    """The STFT framing alone reconstructs the input delayed by latency_samples."""
    m = _tiny()
    x = _wave(1, 1600)
    st_ = m.init_state(1)
    frames = torch.cat([st_["in"], x], 1).unfold(1, m.n_fft, m.hop) * m.window
    spec = torch.view_as_real(torch.fft.rfft(frames, dim=-1))
    m._core = lambda spec, emb, state: (spec, {})  # bypass the network
    y, _ = m._run(x, None, st_)
    lat = m.latency_samples
    assert torch.allclose(y[:, lat:], x[:, :-lat], atol=1e-5)
    assert torch.allclose(compensate_latency(y, lat)[:, :-lat], x[:, :-lat], atol=1e-5)
    del spec


@settings(max_examples=12, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=6),
    injection=st.sampled_from(["join", "encoder", "decoder"]),
)
def test_streaming_equals_offline(cuts, injection):
    m = _tiny(injection=injection)
    total = 24
    x = _wave(2, total * HOP, seed=1)
    e = _emb(2)
    with torch.no_grad():
        y = m(x, e)
        state = m.init_state(2)
        outs, pos = [], 0
        for c in [*cuts, total]:
            n = min(c, total - pos)
            if n <= 0:
                break
            o, state = m.step(x[:, pos * HOP : (pos + n) * HOP], e, state)
            outs.append(o)
            pos += n
    assert pos == total
    assert torch.allclose(torch.cat(outs, 1), y, atol=1e-5)


def test_embedding_changes_between_blocks_and_matters():
    m = _tiny()
    x = _wave(1, 1600)
    e1, e2 = _emb(1, 1), _emb(1, 2)
    with torch.no_grad():
        y1, y2 = m(x, e1), m(x, e2)
        assert not torch.allclose(y1, y2, atol=1e-6)
        state = m.init_state(1)
        a, state = m.step(x[:, :800], e1, state)
        b, state = m.step(x[:, 800:], e2, state)
    assert torch.allclose(a, y1[:, :800], atol=1e-5)
    assert b.shape == (1, 800) and torch.isfinite(b).all()


def test_non_personalized_and_emb_none():
    m = _tiny(personalized=False)
    assert not m.personalized and m.emb_dim == 0
    x = _wave(2, 1600)
    with torch.no_grad():
        assert torch.equal(m(x, None), m(x, _emb(2)))  # embedding ignored
        p = _tiny()
        assert torch.equal(p(x, None), p(x, torch.zeros(2, D)))  # None == zero embedding


def test_shape_and_block_errors():
    m = _tiny()
    with pytest.raises(ValueError, match="250"):
        m.step(_wave(1, 250), _emb(1), m.init_state(1))
    with pytest.raises(TypeError, match=r"\[B, T\]"):
        m(torch.zeros(16000))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        m(_wave(2, 320), torch.zeros(2, D + 1))
    with pytest.raises(TypeError, match=r"\[B, D\]"):
        m(_wave(2, 320), torch.zeros(D))
    with pytest.raises(ValueError, match="pse.size"):
        make_pdfnet2(PSEConfig(size="huge"), D)


# --------------------------------------------------------------------------- training
class FakeSampler:
    """Two-talker sine-voice mixtures; deterministic in ``rng``."""

    def __init__(self, corpus, split, mix_cfg, seed):
        self.speakers = corpus.spk[split]

    def batch(self, rng, batch_size, segment_s):
        t = int(segment_s * 16000)
        n = np.arange(t) / 16000
        mix, tgt, enr, idx, uids, eids = [], [], [], [], [], []
        for _ in range(batch_size):
            a, b = rng.choice(len(self.speakers), 2, replace=False)
            fa, fb = self.speakers[a], self.speakers[b]
            s = 0.1 * np.sin(2 * np.pi * fa * n + rng.uniform(0, 6))
            i = 0.1 * np.sin(2 * np.pi * fb * n + rng.uniform(0, 6))
            mix.append(s + i + 0.01 * rng.standard_normal(t))
            tgt.append(s)
            enr.append(0.1 * np.sin(2 * np.pi * fa * n[:8000]))
            idx.append(a)
            uids.append(f"u{fa}")
            eids.append(f"u{fa}")
        f = lambda v: torch.as_tensor(np.stack(v), dtype=torch.float32)  # noqa: E731
        return {"mixture": f(mix), "target": f(tgt), "enrollment": f(enr),
                "speaker_idx": torch.as_tensor(idx), "utt_ids": uids, "enroll_ids": eids}


class FakeTeacher:
    dim = D
    identity = "fake:test:0"

    def embed(self, wav):
        spec = torch.fft.rfft(torch.as_tensor(wav).float(), dim=-1).abs()
        bands = spec[:, : spec.shape[1] // 2].reshape(spec.shape[0], D, -1).sum(-1)
        return torch.nn.functional.normalize(bands.log1p(), dim=-1)


def _fake_corpus():
    spk = {"train": [300, 500, 700, 900], "val": [400, 800]}
    utts = [SimpleNamespace(utt_id=f"u{f}", split=s, speaker=f"s{f}") for s, fs in spk.items() for f in fs]

    def audio(uid):
        f = int(uid[1:])
        return (0.1 * np.sin(2 * np.pi * f * np.arange(8000) / 16000)).astype(np.float32)

    return SimpleNamespace(spk=spk, utterances=utts, key="fakecorpus", audio=audio)


def _train_cfg() -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.pse = PSEConfig(size="tiny", train_steps=4, batch_size=2, segment_s=0.5, lr=1e-3,
                        val_every=2, patience=10)
    cfg.eval.n_val = 2
    return cfg


@pytest.fixture
def fake_world(monkeypatch):
    monkeypatch.setattr(pse_train, "_make_sampler", FakeSampler)
    monkeypatch.setattr(pse_train, "VAL_MIN", 2)
    return _fake_corpus(), FakeTeacher()


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_train_resume_and_cache(fake_world, tmp_path, schedule):
    from bench.cache import Cache

    corpus, teacher = fake_world
    cfg = _train_cfg()
    cfg.pse.lr_schedule, cfg.pse.warmup_steps = schedule, 1
    # Uninterrupted reference run.
    ref_model, ref_info = pse_train.train_pse(cfg, corpus, teacher, Cache(tmp_path / "a"), progress=False)
    assert ref_info["steps"] == 4 and not ref_info["cached"] and ref_info["params"] > 0
    assert math.isfinite(ref_info["best_val_si_sdri"])
    # Interrupted after 2 steps, then resumed.
    cache = Cache(tmp_path / "b")
    _, part = pse_train.train_pse(cfg, corpus, teacher, cache, progress=False, stop_after=2)
    assert part["interrupted"] and part["steps"] == 2
    model, info = pse_train.train_pse(cfg, corpus, teacher, cache, progress=False)
    assert info["resumed"] and info["steps"] == 4
    for (k, a), b in zip(ref_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), k
    # Cache hit.
    model2, info2 = pse_train.train_pse(cfg, corpus, teacher, cache, progress=False)
    assert info2["cached"] and info2["best_val_si_sdri"] == info["best_val_si_sdri"]
    x = _wave(1, 1600)
    e = teacher.embed(x)
    with torch.no_grad():
        assert torch.allclose(model(x, e), model2(x, e))


def test_train_non_personalized(fake_world, tmp_path):
    from bench.cache import Cache

    corpus, _ = fake_world
    cfg = _train_cfg()
    cfg.pse.personalized = False
    cfg.pse.train_steps = 2
    model, info = pse_train.train_pse(cfg, corpus, None, Cache(tmp_path), progress=False)
    assert not model.personalized and info["steps"] == 2 and info["teacher"] == "none"


def test_losses():
    x = _wave(2, 4000)
    assert torch.all(pse_train.si_sdr(x, x) > 60)
    y = x + 0.3 * _wave(2, 4000, seed=3)
    assert torch.allclose(pse_train.si_sdr(3 * y, x), pse_train.si_sdr(y, x), atol=1e-3)
    assert pse_train.multires_mag_loss(x, x).item() < 1e-6
    assert pse_train.pse_loss(x, x, 0).item() < -60


def test_lr_schedule():
    pc = PSEConfig(lr=1e-3, train_steps=100, warmup_steps=10, lr_schedule="cosine")
    lrs = [pse_train.lr_at(k, pc) for k in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warm-up
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10], strict=True))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # then monotone decay
    assert lrs[-1] > FINAL_LR_FRAC * 1e-3 > 0
    assert pse_train.lr_at(100, pc) == pytest.approx(FINAL_LR_FRAC * 1e-3)
    assert pse_train.lr_at(10_000, pc) == pytest.approx(FINAL_LR_FRAC * 1e-3)
    const = PSEConfig(lr=2e-3, lr_schedule="constant")
    assert {pse_train.lr_at(k, const) for k in (0, 5, 10_000)} == {2e-3}


def test_spectral_resolutions():
    x, y = _wave(2, 4000), _wave(2, 4000, seed=5)
    single = pse_train.multires_mag_loss(x, y, [512])
    both = pse_train.multires_mag_loss(x, y, [512, 256])
    assert single.item() > 0 and not torch.isclose(single, both)
    assert pse_train.multires_mag_loss(x, y, (512,)).item() == pytest.approx(single.item())
