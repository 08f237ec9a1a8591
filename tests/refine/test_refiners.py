"""On-the-fly refinement: update rule, gates, streaming equivalence, oracle, registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.config import RefineConfig
from bench.refine import (
    EMARefiner,
    OracleRefiner,
    StaticRefiner,
    block_samples,
    enhance_streaming,
    make_refiner,
)

torch.set_num_threads(1)


class FakeCausalPSE(nn.Module):
    """Tiny causal model honouring the PSEModel contract.

    ``y[t] = g(e) * (w0 * x[t] + w1 * x[t-1])`` with ``g(e) = 1 + 0.5 * e[:, 0]``; the streaming
    state carries the last input sample. ``hop = 4``.
    """

    hop = 4
    emb_dim = 3
    personalized = True
    latency_samples = 0

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.8, -0.3]))
        self.steps: list[int] = []

    def _gain(self, emb: torch.Tensor | None, batch: int) -> torch.Tensor:
        if emb is None:
            return torch.ones(batch, 1)
        return (1.0 + 0.5 * emb[:, :1]).to(self.w.dtype)

    def forward(self, mixture: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        prev = F.pad(mixture, (1, 0))[:, :-1]
        return self._gain(emb, mixture.shape[0]) * (self.w[0] * mixture + self.w[1] * prev)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> dict:
        return {"last": torch.zeros(batch_size, 1, device=device)}

    def step(self, block: torch.Tensor, emb: torch.Tensor | None, state: dict):
        assert block.shape[1] % self.hop == 0, block.shape
        self.steps.append(block.shape[1])
        prev = torch.cat([state["last"], block[:, :-1]], dim=1)
        out = self._gain(emb, block.shape[0]) * (self.w[0] * block + self.w[1] * prev)
        return out, {"last": block[:, -1:]}


class LinearStudent(nn.Module):
    """Mean of a linear projection over 8-sample frames (any input length)."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(8, dim)
        self.windows: list[int] = []

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        self.windows.append(wav.shape[-1])
        n = wav.shape[-1] // 8 * 8
        frames = wav[:, :n].reshape(wav.shape[0], -1, 8)
        return self.proj(frames).mean(dim=1)


class ConstStudent(nn.Module):
    """Returns a fixed (unnormalised) vector per item."""

    def __init__(self, vec: torch.Tensor) -> None:
        super().__init__()
        self.vec = vec
        self.calls = 0

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.vec.expand(wav.shape[0], -1).clone()


class FakeTeacher(nn.Module):
    dim = 3

    def __init__(self, vec: torch.Tensor) -> None:
        super().__init__()
        self.vec = F.normalize(vec, dim=-1)
        self.calls = 0

    @torch.no_grad()
    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.vec.expand(wav.shape[0], -1).clone()


def _unit(b: int, d: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, generator=g), dim=-1)


def _mixture(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, t, generator=torch.Generator().manual_seed(seed))


def test_registry_names_and_factory():
    from bench import registry

    assert {"static", "ema", "oracle"} <= set(registry.names("refiner"))
    r = make_refiner(RefineConfig(name="ema", alpha=0.2), LinearStudent(), None)
    assert isinstance(r, EMARefiner) and r.alpha == 0.2
    assert isinstance(make_refiner(RefineConfig(name="static"), None, None), StaticRefiner)
    with pytest.raises(ValueError):
        make_refiner(RefineConfig(name="ema", alpha=0.2), None, None)


def test_static_never_changes_e():
    e = _unit(2)
    r = StaticRefiner(RefineConfig(alpha=0.9))
    out = r.update(e, torch.randn(2, 64))
    assert out is e
    assert r.count_extra_macs(64) == 0.0


def test_alpha_zero_is_bit_identical_to_static():
    torch.manual_seed(0)
    model = FakeCausalPSE()
    mix, e0 = _mixture(3, 203), _unit(3)
    static = enhance_streaming(model, mix, e0, StaticRefiner(RefineConfig()), block_s=0.001)
    ema = enhance_streaming(
        model,
        mix,
        e0,
        EMARefiner(RefineConfig(name="ema", alpha=0.0), LinearStudent()),
        block_s=0.001,
    )
    assert torch.equal(static.enhanced, ema.enhanced)
    assert torch.equal(static.embeddings, ema.embeddings)
    # a non-zero alpha does change things
    moved = enhance_streaming(
        model,
        mix,
        e0,
        EMARefiner(RefineConfig(name="ema", alpha=0.5), LinearStudent()),
        block_s=0.001,
    )
    assert not torch.equal(static.enhanced, moved.enhanced)


def test_ema_update_formula_hand_example():
    student = ConstStudent(torch.tensor([[0.0, 2.0]]))
    r = EMARefiner(RefineConfig(name="ema", alpha=0.5), student)
    e = torch.tensor([[1.0, 0.0]])
    new = r.update(e, torch.randn(1, 32))
    h = 1 / math.sqrt(2)
    torch.testing.assert_close(new, torch.tensor([[h, h]]))
    # alpha = 0.25: (0.75, 0.25) / norm
    r = EMARefiner(RefineConfig(name="ema", alpha=0.25), student)
    new = r.update(e, torch.randn(1, 32))
    v = torch.tensor([[0.75, 0.25]])
    torch.testing.assert_close(new, v / v.norm())


def test_energy_gate_skips_quiet_items():
    student = ConstStudent(torch.tensor([[0.0, 1.0]]))
    cfg = RefineConfig(name="ema", alpha=0.5, gate="energy", gate_threshold=-40.0)
    r = EMARefiner(cfg, student)
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    block = torch.stack([torch.zeros(64), 0.5 * torch.ones(64)])  # -inf dB, -6 dB
    new = r.update(e, block)
    assert torch.equal(new[0], e[0])
    assert not torch.equal(new[1], e[1])
    assert r.last_skipped.tolist() == [True, False]
    # all items quiet: the encoder is not even called
    calls = student.calls
    assert torch.equal(r.update(e, torch.zeros(2, 64)), e)
    assert student.calls == calls


def test_agreement_gate_skips_disagreeing_items():
    vec = torch.tensor([[1.0, 1.0], [0.0, -1.0]])  # cos 0.71 with e0; cos -1 with e1

    class PerItem(nn.Module):
        def forward(self, wav):
            return vec

    cfg = RefineConfig(name="ema", alpha=0.5, gate="agreement", gate_threshold=0.5)
    r = EMARefiner(cfg, PerItem())
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    new = r.update(e, torch.randn(2, 16))
    assert r.last_skipped.tolist() == [False, True]
    assert torch.equal(new[1], e[1])
    assert new[0, 1] > 0


@pytest.mark.parametrize("total,block_s", [(200, 0.001), (203, 0.0013), (37, 1.0), (4, 0.0001)])
def test_static_streaming_equals_forward(total, block_s):
    model = FakeCausalPSE()
    mix, e0 = _mixture(2, total), _unit(2)
    res = enhance_streaming(model, mix, e0, StaticRefiner(), block_s=block_s)
    ref = model(mix, e0)
    assert res.enhanced.shape == (2, total)
    torch.testing.assert_close(res.enhanced, ref, rtol=1e-6, atol=1e-6)
    n = block_samples(block_s, model.hop)
    assert n % model.hop == 0 and res.block_len == n
    assert all(s % model.hop == 0 for s in model.steps)
    n_blocks = math.ceil(math.ceil(total / 4) * 4 / n)
    assert res.embeddings.shape == (n_blocks, 2, 3)
    assert res.n_updates == n_blocks - 1 and res.n_skipped == 0


def test_block_rounding_to_hop():
    assert block_samples(0.5, 160) == 8000
    assert block_samples(0.0101, 160) == 160  # 161.6 -> 1 hop
    assert block_samples(0.0, 160) == 160  # at least one hop
    assert block_samples(0.015, 160) == 320  # 240 -> nearest multiple, 1.5 rounds to 2


def test_streaming_without_embedding_and_model_mode_restored():
    model = FakeCausalPSE().train()
    mix = _mixture(2, 64)
    res = enhance_streaming(
        model, mix, None, EMARefiner(RefineConfig(name="ema", alpha=0.5), LinearStudent()), 0.001
    )
    torch.testing.assert_close(res.enhanced, model(mix, None))
    assert res.embeddings is None and res.n_updates == 0
    assert model.training


def test_trajectory_follows_updates_and_context_window():
    student = LinearStudent()
    cfg = RefineConfig(name="ema", alpha=0.3, context_s=0.002)  # 32 samples of context
    res = enhance_streaming(
        FakeCausalPSE(), _mixture(2, 96), _unit(2), EMARefiner(cfg, student), 0.001
    )
    assert res.block_len == 16 and res.embeddings.shape == (6, 2, 3)
    # windows: block only for the first update, then 16 + growing context up to 32
    assert student.windows == [16, 32, 48, 48, 48]
    norms = res.embeddings.norm(dim=-1)
    torch.testing.assert_close(norms[1:], torch.ones_like(norms[1:]))
    assert not torch.equal(res.embeddings[0], res.embeddings[-1])


def test_oracle_uses_teacher():
    target = torch.tensor([[0.0, 0.0, 1.0]])
    teacher = FakeTeacher(target)
    r = OracleRefiner(RefineConfig(name="oracle", alpha=0.5), None, teacher)
    e0 = torch.tensor([[1.0, 0.0, 0.0]]).repeat(2, 1)
    res = enhance_streaming(FakeCausalPSE(), _mixture(2, 160), e0, r, block_s=0.001)
    assert teacher.calls == res.n_updates == 9
    cos = (res.embeddings[-1] * teacher.vec).sum(-1)
    assert torch.all(cos > 0.99)  # converged towards the teacher's embedding
    assert torch.all((res.embeddings[1:] * teacher.vec).sum(-1).diff(dim=0) >= -1e-6)


def test_extra_macs_counted_per_block():
    student = LinearStudent(dim=3)
    r = EMARefiner(RefineConfig(name="ema", alpha=0.1, context_s=0.0), student)
    # one block of 160 samples = 20 frames x Linear(8, 3) = 480 MACs; 100 blocks per second
    assert r.count_extra_macs(160, sr=16000) == pytest.approx(480 * 100)
    r = EMARefiner(RefineConfig(name="ema", alpha=0.1, context_s=0.01), student)
    assert r.extra_macs_per_s == 0.0
    assert r.count_extra_macs(160, sr=16000) == pytest.approx(960 * 100)
    o = OracleRefiner(RefineConfig(name="oracle", alpha=0.1), None, FakeTeacher(torch.ones(1, 3)))
    assert o.count_extra_macs(160) == 0.0  # a teacher without MAC-counted ops


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_streaming_on_cuda_matches_cpu():
    model, student = FakeCausalPSE(), LinearStudent()
    mix, e0 = _mixture(2, 203), _unit(2)
    cfg = RefineConfig(name="ema", alpha=0.3, gate="energy", gate_threshold=-60.0)
    cpu = enhance_streaming(model, mix, e0, EMARefiner(cfg, student), 0.001)
    gpu = enhance_streaming(
        model.cuda(), mix.cuda(), e0.cuda(), EMARefiner(cfg, student.cuda()), 0.001
    )
    assert gpu.enhanced.is_cuda
    torch.testing.assert_close(gpu.enhanced.cpu(), cpu.enhanced, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu.embeddings.cpu(), cpu.embeddings, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- references, control, rules
class WindowTeacher(nn.Module):
    """Records every window it embeds; its embedding is the window's last sample on axis 0."""

    dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[torch.Tensor] = []

    @torch.no_grad()
    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        self.windows.append(wav.clone())
        out = torch.zeros(wav.shape[0], 3)
        out[:, 0] = 1.0
        out[:, 1] = wav[:, -1]
        return out


def test_roles_labels_and_what_refiners_declare():
    from bench.config import ExperimentConfig
    from bench.refine import (
        baseline_name,
        names_with_role,
        reference_name,
        refiner_class,
        system_name,
    )

    assert baseline_name() == "static"
    # the config names the baseline and the rules without importing bench.refine: they must agree
    from bench.config import BASELINE_REFINER, REFINE_GATES, REFINE_RULES, RefineConfig
    from bench.refine import GATES, RULES

    assert RefineConfig().name == BASELINE_REFINER == baseline_name()
    assert RefineConfig().rule == RULES[0] and (RULES, GATES) == (REFINE_RULES, REFINE_GATES)
    assert set(names_with_role("reference")) >= {"oracle_clean", "oracle_enroll_clean"}
    assert names_with_role("control") == ["shrink"] and names_with_role("ceiling") == ["oracle_target"]
    assert reference_name("clean_target") == "oracle_clean"
    assert refiner_class("ema").uses_student and not refiner_class("oracle").uses_student
    assert refiner_class("oracle_target").needs_target and refiner_class("shrink").needs_mean_embedding
    cfg = ExperimentConfig.from_dict({"refine": {"name": "ema", "alpha": 0.1}, "distill": {"loss": "mse"}})
    assert system_name(cfg) == "student-mse"
    cfg.pse.personalized = False
    assert system_name(cfg) == "nonpersonalized"
    with pytest.raises(ValueError, match="unknown refiner role"):
        names_with_role("boss")


def test_shrink_with_rate_zero_is_static_bit_for_bit():
    from bench.refine import ShrinkRefiner

    model = FakeCausalPSE()
    mix, e0 = _mixture(3, 203), _unit(3)
    static = enhance_streaming(model, mix, e0, StaticRefiner(RefineConfig()), block_s=0.001)
    r = ShrinkRefiner(RefineConfig(name="shrink", alpha=0.0))
    r.bind(mean_embedding=torch.tensor([0.0, 0.0, 1.0]))
    shrink = enhance_streaming(model, mix, e0, r, block_s=0.001)
    assert torch.equal(static.enhanced, shrink.enhanced)
    assert torch.equal(static.embeddings, shrink.embeddings)


def test_shrink_moves_toward_the_mean_embedding_only():
    from bench.refine import ShrinkRefiner

    r = ShrinkRefiner(RefineConfig(name="shrink", alpha=0.5))
    with pytest.raises(ValueError, match="mean training embedding"):
        r.update(_unit(1), torch.randn(1, 32))
    r.bind(mean_embedding=torch.tensor([0.0, 0.0, 2.0]))
    e = torch.tensor([[1.0, 0.0, 0.0]])
    a = r.update(e, torch.randn(1, 32))
    b = r.update(e, torch.zeros(1, 32))  # what the block holds does not matter
    h = 1 / math.sqrt(2)
    torch.testing.assert_close(a, torch.tensor([[h, 0.0, h]]))
    torch.testing.assert_close(a, b)
    assert r.count_extra_macs(64) == 0.0


def test_oracle_target_sees_only_the_current_block_and_past_context():
    from bench.refine import TargetOracleRefiner

    teacher = WindowTeacher()
    cfg = RefineConfig(name="oracle_target", alpha=0.5, context_s=0.001)  # 16 samples of context
    r = TargetOracleRefiner(cfg, None, teacher)
    total = 96
    target = torch.arange(total, dtype=torch.float32).repeat(2, 1)  # value = sample index
    mix = _mixture(2, total)
    with pytest.raises(ValueError, match="clean target"):
        enhance_streaming(FakeCausalPSE(), mix, _unit(2), r, block_s=0.001)
    res = enhance_streaming(FakeCausalPSE(), mix, _unit(2), r, block_s=0.001, target=target)
    assert res.block_len == 16 and len(teacher.windows) == res.n_updates == 5
    for k, w in enumerate(teacher.windows):
        stop = (k + 1) * 16
        start = max(0, stop - 16 - 16)
        # exactly the target's samples [start, stop): the block and its past context, nothing later
        torch.testing.assert_close(w[0], torch.arange(start, stop, dtype=torch.float32))


def test_anchored_rule_is_a_running_mean_with_the_enrollment_weighing_n0():
    s = torch.tensor([[0.0, 1.0]])
    r = EMARefiner(RefineConfig(name="ema", alpha=0.1, rule="anchored", n0=3.0), ConstStudent(s))
    e = torch.tensor([[1.0, 0.0]])
    r.reset()
    e1 = r.update(e, torch.randn(1, 8))  # rate 1/(1+3)
    v = torch.tensor([[0.75, 0.25]])
    torch.testing.assert_close(e1, v / v.norm())
    e2 = r.update(e1, torch.randn(1, 8))  # rate 1/(2+3)
    v2 = 0.8 * e1 + 0.2 * s
    torch.testing.assert_close(e2, v2 / v2.norm())
    r.reset()
    assert r.k == 0


def test_reliability_rule_weights_by_agreement_with_the_start_embedding():
    vec = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # cos with e0: 1.0, 0.6, 0.0

    class PerItem(nn.Module):
        def forward(self, wav):
            return vec

    cfg = RefineConfig(name="ema", alpha=0.5, rule="reliability", rel_lo=0.2, rel_hi=0.8)
    r = EMARefiner(cfg, PerItem())
    e0 = torch.tensor([[1.0, 0.0]]).repeat(3, 1)
    r.reset()
    new = r.update(e0, torch.randn(3, 8))
    # weights: 1 (clipped), (0.6 - 0.2) / 0.6 = 2/3, 0 -> rates 0.5, 1/3, 0
    torch.testing.assert_close(new[0], torch.tensor([1.0, 0.0]))
    want = F.normalize((1 - 1 / 3) * e0[1] + (1 / 3) * vec[1], dim=-1)
    torch.testing.assert_close(new[1], want)
    torch.testing.assert_close(new[2], e0[2])
    with pytest.raises(ValueError, match="rel_hi"):
        EMARefiner(RefineConfig(name="ema", alpha=0.5, rule="reliability", rel_lo=0.5, rel_hi=0.5), PerItem())
