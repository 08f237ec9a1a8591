import pytest
import torch

from bench import registry
from bench.config import ExperimentConfig
from bench.distill import distill_student
from tests._kd_helpers import FakeCorpus, FakeTeacher


def _cfg(**distill):
    d = {"steps": 6, "batch_size": 8, "val_every": 3, "patience": 5, "window_s": 0.5, "inputs": ["clean", "noisy"]}
    d.update(distill)
    return ExperimentConfig.from_dict({"distill": d, "mix": {"noise_types": ["white", "pink"]}})


@pytest.fixture(scope="module")
def corpus():
    return FakeCorpus(n_train=4, n_val=2, n_test=0, n_utts=2, seconds=1.5)


def test_distill_runs_and_caches(cache, corpus):
    teacher = FakeTeacher(32)
    student, info = distill_student(_cfg(), corpus, teacher, cache, progress=False)
    assert info["steps"] == 6 and info["params"] < 150_000 and not info["cached"]
    assert {"wall_s", "val_loss", "val_agreement", "params", "steps"} <= set(info)
    assert student(torch.randn(2, 8000)).shape == (2, 32)
    assert cache.is_done("student", info["key"])
    calls = teacher.calls
    student2, info2 = distill_student(_cfg(), corpus, teacher, cache, progress=False)
    assert info2["cached"] and teacher.calls == calls
    for a, b in zip(student.state_dict().values(), student2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_distill_seeded(cache, tmp_path, corpus):
    from bench.cache import Cache

    s1, _ = distill_student(_cfg(steps=3), corpus, FakeTeacher(32), cache, progress=False)
    s2, _ = distill_student(_cfg(steps=3), corpus, FakeTeacher(32), Cache(tmp_path / "other"), progress=False)
    for a, b in zip(s1.state_dict().values(), s2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_distill_resumes_after_interrupt(cache, corpus, monkeypatch):
    real_get = registry.get
    count = {"n": 0}

    def flaky_get(kind, name):
        obj = real_get(kind, name)
        if kind != "loss":
            return obj

        def factory(cfg):
            f = obj(cfg)

            def loss(s, t, spk=None):
                count["n"] += 1
                if count["n"] == 5:  # after the step-3 checkpoint (+ its validation batch)
                    raise KeyboardInterrupt
                return f(s, t, spk)

            return loss

        return factory

    monkeypatch.setattr(registry, "get", flaky_get)
    with pytest.raises(KeyboardInterrupt):
        distill_student(_cfg(), corpus, FakeTeacher(32), cache, progress=False)
    monkeypatch.setattr(registry, "get", real_get)
    _, info = distill_student(_cfg(), corpus, FakeTeacher(32), cache, progress=False)
    assert info["resumed"] and info["steps"] == 6


def test_distill_enhanced_inputs_and_speaker_positives(cache, corpus):
    seen = []

    class Enh:
        identity = "identity-enhancer"

        def __call__(self, mixture, emb):
            seen.append((mixture.shape, emb.shape))
            return mixture * 0.5

    cfg = _cfg(steps=2, inputs=["clean", "noisy", "enhanced"], positives="speaker", loss="contrastive")
    _, info = distill_student(cfg, corpus, FakeTeacher(32), cache, enhancer=Enh(), progress=False)
    assert seen and seen[0][1][1] == 32
    assert "enhanced" in info["inputs"]


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_distill_other_losses(cache, corpus, loss):
    _, info = distill_student(_cfg(steps=2, loss=loss), corpus, FakeTeacher(32), cache, progress=False)
    assert info["loss"] == loss and info["val_loss"] == info["val_loss"]


def test_enhanced_inputs_under_a_drifted_embedding():
    """``distill.enh_emb_mix``: the enhancer's embedding is the enrollment's moved toward another
    speaker's target by a weight in [0, enh_emb_mix]; at 0 it is the enrollment's own target."""
    import numpy as np

    from bench.distill import draw_inputs, finish_inputs

    targets = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    spk = [0, 0, 1, 1, 2, 2, 3, 3]
    by_spk = {s: [i for i, t in enumerate(spk) if t == s] for s in set(spk)}

    class Mixer:
        def window(self, i):
            return np.full(10, float(i), np.float32)

        def noisy(self, i, rng):
            return np.full(10, float(i), np.float32)

    class Enh:
        def __call__(self, x, e):
            self.e = e
            return x

    idx = np.arange(8)
    inputs = ["clean", "enhanced"]
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    x, enh, enroll, mix = draw_inputs(idx, inputs, rng_a, Mixer(), by_spk, spk, 0.0)
    assert mix == [] and enh == [1, 3, 5, 7]
    enh_fn = Enh()
    finish_inputs(torch.from_numpy(x), enh, enroll, enh_fn, targets, "cpu", mix)
    assert torch.equal(enh_fn.e, targets[enroll])
    x2, enh2, enroll2, mix2 = draw_inputs(idx, inputs, rng_b, Mixer(), by_spk, spk, 0.4)
    assert enroll2 == enroll and np.array_equal(x2, x)  # the extra draws come after the usual ones
    assert len(mix2) == len(enh2)
    for j, (other, w) in zip(enh2, mix2, strict=True):
        assert spk[other] != spk[j] and 0.0 <= w <= 0.4
    finish_inputs(torch.from_numpy(x2), enh2, enroll2, enh_fn, targets, "cpu", mix2)
    for k, (other, w) in enumerate(mix2):
        want = torch.nn.functional.normalize((1 - w) * targets[enroll2[k]] + w * targets[other], dim=0)
        assert torch.allclose(enh_fn.e[k], want, atol=1e-6)


def test_enh_emb_mix_keys_the_student_only_when_on(cache, corpus):
    from bench.distill import distill_key

    class Enh:
        identity = "half"

        def __call__(self, mixture, emb):
            return mixture * 0.5

    def key(**kw):
        return distill_key(_cfg(inputs=["clean", "enhanced"], **kw), corpus, FakeTeacher(32), Enh())

    assert key(enh_emb_mix=0.0) == key() != key(enh_emb_mix=0.3)
    cfg = _cfg(steps=2, inputs=["clean", "enhanced"], enh_emb_mix=0.3)
    _, info = distill_student(cfg, corpus, FakeTeacher(32), cache, enhancer=Enh(), progress=False)
    assert info["steps"] == 2 and cache.is_done("student", info["key"])


def test_a_loss_by_tau_grid_trains_one_mse_student_not_one_per_tau(corpus):
    from bench.distill import distill_key

    teacher = FakeTeacher(32)
    keys = {(loss, tau): distill_key(_cfg(loss=loss, tau=tau), corpus, teacher)
            for loss in ("contrastive", "mse", "cosine") for tau in (0.03, 0.1, 0.3)}
    assert len({keys["mse", tau] for tau in (0.03, 0.1, 0.3)}) == 1
    assert len({keys["cosine", tau] for tau in (0.03, 0.1, 0.3)}) == 1
    assert len({keys["contrastive", tau] for tau in (0.03, 0.1, 0.3)}) == 3
    assert len(set(keys.values())) == 5


@pytest.mark.parametrize(("extra", "map_kind"), [({"centre": True}, "restore"), ({"align": "affine"}, "affine"),
                                                 ({"align": "orthogonal", "loss": "mse"}, "orthogonal")])
def test_distill_with_an_output_map_stores_and_reloads_it(cache, corpus, extra, map_kind):
    from bench.students.heads import MappedStudent

    teacher = FakeTeacher(32)
    student, info = distill_student(_cfg(steps=3, **extra), corpus, teacher, cache, progress=False)
    assert isinstance(student, MappedStudent) and info["map"] == map_kind and info["map_size"] == 32 * 33
    assert -1.0 <= info["val_agreement"] <= 1.0 and "val_agreement_loss_space" in info
    assert -1.0 <= info["val_mean_cos_student"] <= 1.0 and -1.0 <= info["val_mean_cos_teacher"] <= 1.0
    again, info2 = distill_student(_cfg(steps=3, **extra), corpus, teacher, cache, progress=False)
    assert info2["cached"] and isinstance(again, MappedStudent)
    wav = torch.randn(2, 8000) * 0.1
    with torch.no_grad():
        assert torch.equal(student(wav), again(wav))
    if map_kind == "restore":  # centred InfoNCE's map puts the train pool's mean back
        assert not torch.equal(again.map.bias, torch.zeros(32))


def test_an_option_the_loss_does_not_read_changes_nothing_it_trains(cache, corpus):
    """centre is a contrastive option: an MSE student with it set is the MSE student (one key, no map)."""
    from bench.students.heads import MappedStudent

    teacher = FakeTeacher(32)
    plain, info = distill_student(_cfg(steps=2, loss="mse"), corpus, teacher, cache, progress=False)
    centred, info2 = distill_student(_cfg(steps=2, loss="mse", centre=True), corpus, teacher, cache, progress=False)
    assert info2["cached"] and info2["key"] == info["key"]
    assert not isinstance(centred, MappedStudent) and "map" not in info2
