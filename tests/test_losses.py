import math

import pytest
import torch

from bench import registry
from bench.config import DistillConfig
from bench.losses import info_nce


def _unit(angles):
    return torch.tensor([[math.cos(a), math.sin(a)] for a in angles])


def _manual_ce(sim, pos):
    out = []
    for i in range(len(sim)):
        num = sum(math.exp(sim[i][j]) for j in range(len(sim[i])) if pos[i][j])
        den = sum(math.exp(sim[i][j]) for j in range(len(sim[i])))
        out.append(-math.log(num / den))
    return sum(out) / len(out)


S = _unit([0.0, 1.0, 2.5])
T = _unit([0.2, 1.3, 2.0])


def _sim(tau):
    return [[float(S[i] @ T[j]) / tau for j in range(3)] for i in range(3)]


def test_registered():
    assert {"contrastive", "mse", "cosine"} <= set(registry.names("loss"))


def test_infonce_one_direction_matches_hand_computation():
    tau = 0.5
    sim = _sim(tau)
    eye = [[i == j for j in range(3)] for i in range(3)]
    f = registry.get("loss", "contrastive")(DistillConfig(tau=tau, symmetric=False))
    assert float(f(S, T)) == pytest.approx(_manual_ce(sim, eye), rel=1e-5)


def test_infonce_symmetric_matches_hand_computation():
    tau = 0.5
    sim = _sim(tau)
    simT = [list(r) for r in zip(*sim, strict=True)]
    eye = [[i == j for j in range(3)] for i in range(3)]
    f = registry.get("loss", "contrastive")(DistillConfig(tau=tau, symmetric=True))
    want = 0.5 * (_manual_ce(sim, eye) + _manual_ce(simT, eye))
    assert float(f(S, T)) == pytest.approx(want, rel=1e-5)


def test_infonce_speaker_positives():
    tau = 0.2
    sim = _sim(tau)
    spk = [0, 0, 1]
    pos = [[spk[i] == spk[j] for j in range(3)] for i in range(3)]
    f = registry.get("loss", "contrastive")(DistillConfig(tau=tau, symmetric=False, positives="speaker"))
    got = float(f(S, T, torch.tensor(spk)))
    assert got == pytest.approx(_manual_ce(sim, pos), rel=1e-5)
    # more positives -> lower loss than instance-only
    assert got < float(info_nce(S, T, tau=tau, symmetric=False))
    with pytest.raises(ValueError, match="speaker"):
        f(S, T, None)


def test_infonce_unnormalised_inputs_are_normalised():
    f = registry.get("loss", "contrastive")(DistillConfig(tau=0.1))
    assert float(f(3 * S, 0.5 * T)) == pytest.approx(float(f(S, T)), rel=1e-5)


def test_mse_and_cosine():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    mse = registry.get("loss", "mse")(DistillConfig(loss="mse"))
    cos = registry.get("loss", "cosine")(DistillConfig(loss="cosine"))
    # row 0: orthogonal -> ||a-b||^2 = 2, 1-cos = 1; row 1: identical after normalisation -> 0
    assert float(mse(s, t)) == pytest.approx(1.0)
    assert float(cos(s, t)) == pytest.approx(0.5)
    # on unit vectors mse = 2 * (1 - cos)
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    assert float(mse(a, b)) == pytest.approx(2 * float(cos(a, b)), rel=1e-5)


def test_losses_backprop():
    s = torch.randn(4, 8, requires_grad=True)
    t = torch.randn(4, 8)
    for name in ("contrastive", "mse", "cosine"):
        loss = registry.get("loss", name)(DistillConfig(loss=name))(s, t, torch.tensor([0, 0, 1, 1]))
        (g,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(g).all()


def test_centred_infonce_is_unchanged_by_a_constant_added_to_every_teacher_embedding():
    from bench.losses import centre_targets

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    c = 3.0 * torch.randn(8, generator=g)
    f = registry.get("loss", "contrastive")(DistillConfig(tau=0.1, centre=True))
    centred = float(f(s, centre_targets(t, t.mean(0))))
    shifted = float(f(s, centre_targets(t + c, (t + c).mean(0))))
    assert shifted == pytest.approx(centred, rel=1e-5, abs=1e-6)
    assert float(f(s, t + c)) != pytest.approx(float(f(s, t)), rel=1e-3)  # plain InfoNCE moves


def test_coordinate_term_adds_weighted_mse():
    from bench.losses import mse_loss

    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    plain = float(registry.get("loss", "contrastive")(DistillConfig())(s, t))
    coord = float(registry.get("loss", "contrastive")(DistillConfig(coord_weight=0.5))(s, t))
    assert coord == pytest.approx(plain + 0.5 * float(mse_loss(s, t)), rel=1e-6)


def test_loss_options_reach_the_key_only_where_the_loss_reads_them():
    from bench.cache import key_slice
    from bench.losses import distill_slice, loss_options

    assert loss_options("mse") == () and "tau" in loss_options("contrastive")
    assert distill_slice(DistillConfig(loss="mse", tau=0.03)) == distill_slice(DistillConfig(loss="mse", tau=1.0))
    assert distill_slice(DistillConfig(loss="cosine", centre=True)) == distill_slice(DistillConfig(loss="cosine"))
    assert distill_slice(DistillConfig(tau=0.03)) != distill_slice(DistillConfig(tau=1.0))
    assert distill_slice(DistillConfig(centre=True)) != distill_slice(DistillConfig())
    assert distill_slice(DistillConfig(loss="mse", align="affine")) != distill_slice(DistillConfig(loss="mse"))
    # keys made before these options existed hold (the fields as they were then)
    legacy = ("weight_decay", "warmup_max", "grad_clip", "enh_emb_mix")
    for dc in (DistillConfig(), DistillConfig(loss="mse"), DistillConfig(tau=0.3, positives="speaker")):
        before = {k: v for k, v in key_slice(dc, legacy).items() if k not in ("centre", "coord_weight", "align", "source")}
        assert distill_slice(dc) == before
