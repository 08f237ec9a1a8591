"""Output maps into the teacher's space (bench.students.heads) and students that carry one."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.students.heads import MappedStudent, OutputMap, fit_affine, fit_orthogonal, restore_map
from bench.students.streaming import streaming_encoder
from bench.students.tiny import TinyStudent


def _rotation(d: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 24), scale=st.floats(0.2, 3.0))
def test_orthogonal_map_recovers_a_known_rotation_plus_offset(seed, d, scale):
    g = torch.Generator().manual_seed(seed)
    s = F.normalize(torch.randn(200, d, generator=g, dtype=torch.float64), dim=-1)
    rot = _rotation(d, seed + 1)
    offset = torch.randn(d, generator=g, dtype=torch.float64)
    t = scale * s @ rot + offset
    w, b = fit_orthogonal(s, t)
    assert torch.allclose(w.double(), scale * rot, atol=1e-4)
    assert torch.allclose(b.double(), offset, atol=1e-4)
    assert torch.allclose(OutputMap(d).set(w, b)(s).double(), t, atol=1e-4)


def test_affine_map_recovers_a_known_affine_map():
    g = torch.Generator().manual_seed(0)
    s = F.normalize(torch.randn(500, 16, generator=g), dim=-1)
    w_true, b_true = torch.randn(16, 8, generator=g), torch.randn(8, generator=g)
    w, b = fit_affine(s, s @ w_true + b_true, ridge=0.0)
    assert torch.allclose(w, w_true, atol=1e-3) and torch.allclose(b, b_true, atol=1e-3)


def test_orthogonal_map_is_a_rotation_not_a_reflection():
    g = torch.Generator().manual_seed(3)
    s = F.normalize(torch.randn(100, 4, generator=g), dim=-1)
    refl = torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0]))
    w, _ = fit_orthogonal(s, s @ refl)
    assert torch.det(w) > 0  # the best rotation, which cannot equal the reflection
    assert not torch.allclose(w, refl, atol=1e-2)


def test_fits_refuse_bad_shapes():
    with pytest.raises(TypeError, match="same N"):
        fit_affine(torch.randn(5, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="equal dimensions"):
        fit_orthogonal(torch.randn(5, 3), torch.randn(5, 4))


def test_restore_map_puts_the_mean_back():
    g = torch.Generator().manual_seed(1)
    t = F.normalize(torch.rand(64, 8, generator=g) + 1.0, dim=-1)  # one narrow cone, like GE2E
    mean = t.mean(0)
    w, b = restore_map(mean, t - mean)
    centred_dir = F.normalize(t - mean, dim=-1)
    back = OutputMap(8).set(w, b)(centred_dir)
    cos = F.cosine_similarity(back, t, dim=-1)
    assert float(cos.mean()) > 0.99
    assert float(F.cosine_similarity(centred_dir, t, dim=-1).mean()) < 0.5  # without the map it is far off


def test_mapped_student_applies_its_map_in_window_and_streaming_inference():
    torch.manual_seed(0)
    inner = TinyStudent(16).eval()
    mapped = MappedStudent(inner, 16).eval()
    w, b = torch.randn(16, 16), torch.randn(16)
    mapped.map.set(w, b)
    wav = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        want = F.normalize(inner(wav), dim=-1) @ w + b
        assert torch.allclose(mapped(wav), want, atol=1e-5)
        inner_stream = streaming_encoder(inner)
        want_s = F.normalize(inner_stream(wav), dim=-1) @ w + b
        assert torch.allclose(streaming_encoder(mapped)(wav), want_s, atol=1e-5)
    assert mapped.num_params == inner.num_params and mapped.map_size == 16 * 16 + 16
    keys = set(mapped.state_dict())
    assert {"map.weight", "map.bias"} <= keys and not any(k.startswith("_stream") for k in keys)
    again = MappedStudent(TinyStudent(16), 16)
    again.load_state_dict(mapped.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(wav), mapped(wav))
