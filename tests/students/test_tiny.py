import pytest
import torch

from bench import registry
from bench.config import StudentConfig
from bench.students import num_params


@pytest.mark.parametrize("dim", [192, 256, 512])
def test_default_student_under_cap(dim):
    m = registry.get("student", "tiny")(StudentConfig(), dim)
    assert m.num_params == num_params(m) < 150_000
    y = m(torch.randn(3, 16000))
    assert y.shape == (3, dim)


def test_param_cap_enforced():
    with pytest.raises(ValueError, match=r"parameters .*over the cap student.max_params=50000"):
        registry.get("student", "tiny")(StudentConfig(max_params=50_000), 256)
    big = StudentConfig(channels=256, hidden=256)
    with pytest.raises(ValueError, match="150000"):
        registry.get("student", "tiny")(big, 512)


def test_student_varying_lengths_and_grad():
    m = registry.get("student", "tiny")(StudentConfig(), 256)
    for n in (4000, 16000, 40000):
        assert m(torch.randn(2, n)).shape == (2, 256)
    m(torch.randn(2, 16000)).pow(2).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
