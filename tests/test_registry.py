from __future__ import annotations

import pytest

from bench import registry
from bench.registry import RegistryError


def test_register_get_names_roundtrip():
    @registry.register("loss", "_test_dummy_loss")
    def make(cfg):  # pragma: no cover - never called
        return None

    assert registry.get("loss", "_test_dummy_loss") is make
    assert "_test_dummy_loss" in registry.names("loss")


def test_unknown_name_lists_registered():
    with pytest.raises(RegistryError) as err:
        registry.get("loss", "infonce-typo")
    msg = str(err.value)
    assert "infonce-typo" in msg
    for name in ("contrastive", "mse", "cosine"):
        assert name in msg


def test_unknown_kind_lists_kinds():
    with pytest.raises(RegistryError) as err:
        registry.names("vocoder")
    assert "teacher" in str(err.value) and "refiner" in str(err.value)


def test_duplicate_registration_by_other_object_fails():
    @registry.register("refiner", "_test_dup")
    class A:  # noqa: D401
        pass

    with pytest.raises(ValueError, match="already registered"):

        @registry.register("refiner", "_test_dup")
        def other():  # pragma: no cover
            return None


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("teacher", {"ge2e", "ecapa", "titanet", "wavlm"}),
        ("student", {"tiny"}),
        ("loss", {"contrastive", "mse", "cosine"}),
        ("pse", {"pdfnet2"}),
        ("refiner", {"static", "ema", "oracle"}),
        ("dataset", {"embedded", "librispeech", "voxceleb", "manifest"}),
    ],
)
def test_builtin_plugins_registered(kind, expected):
    assert expected <= set(registry.names(kind))
