"""The pieces the three training loops share: one schedule, one validation bookkeeping, and the
results-changing settings that moved from module constants into config."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.cache import config_hash, key_slice
from bench.config import (
    DISTILL_ADDED_FIELDS,
    PSE_ADDED_FIELDS,
    TEACHER_ADDED_FIELDS,
    ConfigError,
    DistillConfig,
    ExperimentConfig,
    PSEConfig,
    TeacherConfig,
    validate,
)
from bench.pse import train as pse_train
from bench.trainloop import FINAL_LR_FRAC, note_validation, warmup_cosine


def _old_student_multiplier(step: int, steps: int) -> float:
    """The student schedule as distill.py wrote it before the loops shared one (reference)."""
    warm = min(50, max(1, steps // 10))
    if step < warm:
        return (step + 1) / warm
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


@given(st.integers(1, 5000), st.data())
def test_shared_schedule_is_the_old_student_schedule_bit_for_bit(steps, data):
    step = data.draw(st.integers(0, steps - 1))
    warm = min(DistillConfig().warmup_max, max(1, steps // 10))
    assert warmup_cosine(step, steps, warm) == _old_student_multiplier(step, steps)


def test_schedule_shape():
    lrs = [warmup_cosine(k, 100, 10, peak=2.0) for k in range(120)]
    assert lrs[0] == pytest.approx(0.2) and lrs[9] == pytest.approx(2.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[100] == lrs[119] == pytest.approx(FINAL_LR_FRAC * 2.0)
    # the backbone's schedule is the shared one
    pc = PSEConfig(lr=1e-3, train_steps=100, warmup_steps=10)
    assert [pse_train.lr_at(k, pc) for k in range(100)] == [warmup_cosine(k, 100, 10, peak=1e-3) for k in range(100)]
    # and equals what bench/pse/train.py computed before, up to the last bit
    for k in range(10, 100):
        old = 1e-3 * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (k - 10) / 90))))
        assert pse_train.lr_at(k, pc) == pytest.approx(old, rel=1e-14, abs=0)


def test_note_validation_both_directions():
    up = {"best": -math.inf, "best_step": 0, "bad": 0, "step": 100}
    assert note_validation(up, 1.0, higher_is_better=True) and up["best"] == 1.0 and up["best_step"] == 100
    up["step"] = 200
    assert not note_validation(up, 0.5, higher_is_better=True) and up["bad"] == 1 and up["best_step"] == 100
    down = {"best": math.inf, "best_step": 0, "bad": 0, "step": 1}
    assert note_validation(down, 2.0, higher_is_better=False)
    down["step"] = 2
    # an improvement smaller than min_delta is no improvement
    assert not note_validation(down, 2.0 - 1e-9, higher_is_better=False, min_delta=1e-6) and down["bad"] == 1
    assert note_validation(down, 1.0, higher_is_better=False, min_delta=1e-6) and down["bad"] == 0


@pytest.mark.parametrize(("cls", "added"), [(DistillConfig, DISTILL_ADDED_FIELDS), (PSEConfig, PSE_ADDED_FIELDS),
                                            (TeacherConfig, TEACHER_ADDED_FIELDS)])
def test_added_fields_keep_old_keys_at_their_defaults_and_change_them_otherwise(cls, added):
    d = cls()
    old = {k: v for k, v in vars(d).items() if k not in added}  # what the key hashed before
    assert config_hash(key_slice(d, added)) == config_hash(old)
    for name in added:
        v = getattr(d, name)
        other = (not v) if isinstance(v, bool) else f"{v}-other" if isinstance(v, str) else v * 2 + 1
        moved = cls(**{name: other})
        assert config_hash(key_slice(moved, added)) != config_hash(old), name


def test_student_key_sees_weight_decay():
    from bench.distill import distill_key

    corpus, teacher = SimpleNamespace(key="c"), SimpleNamespace(identity="t")
    a = ExperimentConfig()
    b = ExperimentConfig()
    b.distill.weight_decay = 0.01
    assert distill_key(a, corpus, teacher) != distill_key(b, corpus, teacher)


@pytest.mark.parametrize(("key", "value"), [("distill.weight_decay", -1.0), ("distill.warmup_max", 0),
                                            ("distill.grad_clip", 0.0), ("pse.grad_clip", -2.0),
                                            ("teacher.train_lr", -0.1), ("teacher.train_batch_size", 1),
                                            ("teacher.train_crop_s", 0.0), ("teacher.train_grad_clip", 0.0)])
def test_bad_training_settings_are_named(key, value):
    cfg = ExperimentConfig()
    section, field = key.split(".")
    setattr(getattr(cfg, section), field, value)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)
