"""The model zoo (pse.source: zoo), users' checkpoints (pse.source: local), embedding augmentation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from bench import zoo
from bench.cache import Cache
from bench.config import ConfigError, ExperimentConfig, PSEConfig
from bench.pse import train as pse_train
from bench.pse.embaug import EmbeddingAugmenter, degraded_pool, refine_embedding
from bench.pse.pdfnet2 import make_pdfnet2
from bench.zoo import __main__ as zoo_cli
from tests.pse.test_pdfnet2 import FakeSampler, FakeTeacher, _fake_corpus, _train_cfg, _wave


@pytest.fixture
def fake_world(monkeypatch):
    monkeypatch.setattr(pse_train, "_make_sampler", FakeSampler)
    monkeypatch.setattr(pse_train, "VAL_MIN", 2)
    return _fake_corpus(), FakeTeacher()


def _zoo_entry(tmp_path, corpus, teacher, cfg):
    model, info = pse_train.train_pse(cfg, corpus, teacher, Cache(tmp_path / "build"), progress=False)
    key = pse_train.stage_key(cfg, corpus, teacher)
    state = tmp_path / "build" / "pse" / key / "model.pt"
    rec = zoo_cli.add("tiny-test", state, {**info, "key": key}, cfg, corpus, teacher, "pytest",
                      zoo_dir=tmp_path / "zoo")
    return model, rec


def test_zoo_entry_is_loaded_verified_and_keyed(fake_world, tmp_path, monkeypatch):
    corpus, teacher = fake_world
    corpus.speakers = lambda split=None: corpus.spk.get(split, [])
    cfg = _train_cfg()
    model, rec = _zoo_entry(tmp_path, corpus, teacher, cfg)
    assert rec["sha256"] == zoo.sha256(tmp_path / "zoo" / "tiny-test.pt") and rec["steps"] == 4
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    cfg.pse.source = "zoo"
    empty = Cache(tmp_path / "empty")
    got, info = pse_train.train_pse(cfg, corpus, teacher, empty, progress=False)
    assert info["pse_source"].startswith("zoo:tiny-test.pt@") and not any((empty.root / "pse").glob("*/model.pt"))
    x = _wave(1, 1600)
    with torch.no_grad():
        assert torch.equal(got(x, teacher.embed(x)), model(x, teacher.embed(x)))
    # a damaged file is an error that names it, never silently used
    (tmp_path / "zoo" / "tiny-test.pt").write_bytes(b"broken")
    with pytest.raises(zoo.ZooError, match="tiny-test.pt is damaged"):
        pse_train.train_pse(cfg, corpus, teacher, empty, progress=False)


def test_zoo_without_entry_trains_here_with_a_warning(fake_world, tmp_path, monkeypatch, caplog):
    corpus, teacher = fake_world
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "nozoo")
    cfg = _train_cfg()
    cfg.pse.source = "zoo"
    with caplog.at_level(logging.WARNING, logger="bench"):
        _, info = pse_train.train_pse(cfg, corpus, teacher, Cache(tmp_path / "c"), progress=False)
    assert info["pse_source"] == "trained" and info["steps"] == 4
    assert "no zoo entry" in caplog.text


def test_zoo_miss_names_the_entry_a_few_overrides_would_select(fake_world, tmp_path, monkeypatch, caplog):
    corpus, teacher = fake_world
    corpus.speakers = lambda split=None: corpus.spk.get(split, [])
    cfg = _train_cfg()
    _zoo_entry(tmp_path, corpus, teacher, cfg)
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    other = _train_cfg()
    other.pse.source, other.pse.seed = "zoo", cfg.pse.seed + 7
    with caplog.at_level(logging.WARNING, logger="bench"):
        _, info = pse_train.train_pse(other, corpus, teacher, Cache(tmp_path / "c"), progress=False)
    assert info["pse_source"] == "trained"
    assert f"tiny-test (pse.seed={cfg.pse.seed})" in caplog.text
    # only entries of the same teacher and corpus, and only within max_diff fields
    pse = pse_train.training_slice(other.pse)
    assert [n for n, _ in zoo.nearest(pse, teacher.identity, corpus.key)] == ["tiny-test"]
    assert zoo.nearest(pse, "another-teacher", corpus.key) == []
    assert zoo.nearest(pse, teacher.identity, "another-corpus") == []
    far = {**pse, "lr": 1.0, "batch_size": 3, "train_steps": 99}
    assert zoo.nearest(far, teacher.identity, corpus.key) == []
    assert zoo.describe_nearest([]) == ""
    # values as the override parser reads them back; a field the entry leaves at its default says so
    line = zoo.describe_nearest([("x", {"injection": ("film", "join"), "grad_clip": (1.0, None)})])
    assert line.endswith('x (pse.injection="join", pse.grad_clip at its default)')


def test_local_checkpoint_is_evaluated_without_training(fake_world, tmp_path):
    corpus, teacher = fake_world
    cfg = _train_cfg()
    model, _ = pse_train.train_pse(cfg, corpus, teacher, Cache(tmp_path / "a"), progress=False)
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    cfg.pse.source, cfg.pse.path = "local", str(path)
    c = Cache(tmp_path / "b")
    got, info = pse_train.train_pse(cfg, corpus, teacher, c, progress=False)
    assert info["pse_source"] == f"local:{path}" and not (c.root / "pse").exists()
    x = _wave(1, 1600)
    with torch.no_grad():
        assert torch.equal(got(x, teacher.embed(x)), model(x, teacher.embed(x)))
    cfg.pse.size = "cpu"  # another architecture: a clear error, not a traceback from torch
    with pytest.raises(zoo.ZooError, match="does not fit pse pdfnet2/cpu"):
        pse_train.train_pse(cfg, corpus, teacher, c, progress=False)
    cfg.pse.path = str(tmp_path / "missing.pt")
    with pytest.raises(zoo.ZooError, match="does not exist"):
        pse_train.train_pse(cfg, corpus, teacher, c, progress=False)


def test_config_checks_sources_and_augmentation_ranges():
    with pytest.raises(ConfigError, match="pse.path is empty"):
        ExperimentConfig.from_dict({"pse": {"source": "local"}})
    with pytest.raises(ConfigError, match="pse.source='hub'"):
        ExperimentConfig.from_dict({"pse": {"source": "hub"}})
    with pytest.raises(ConfigError, match=r"pse.emb_drop=1.5 is out of range"):
        ExperimentConfig.from_dict({"pse": {"emb_drop": 1.5}})


def test_stage_key_ignores_where_weights_come_from_and_embedding_switches_without_embedding(fake_world):
    corpus, teacher = fake_world
    a, b = _train_cfg(), _train_cfg()
    b.pse.source, b.pse.path = "local", "x.pt"
    assert pse_train.stage_key(a, corpus, teacher) == pse_train.stage_key(b, corpus, teacher)
    b.pse.emb_drop = 0.2
    assert pse_train.stage_key(a, corpus, teacher) != pse_train.stage_key(b, corpus, teacher)
    a.pse.personalized = b.pse.personalized = False
    assert pse_train.stage_key(a, corpus, None) == pse_train.stage_key(b, corpus, None)


def test_stage_key_of_a_twin_ignores_the_injection_point(fake_world):
    corpus, teacher = fake_world
    a, b = _train_cfg(), _train_cfg()
    b.pse.injection = "encoder"
    assert pse_train.stage_key(a, corpus, teacher) != pse_train.stage_key(b, corpus, teacher)
    a.pse.personalized = b.pse.personalized = False
    assert pse_train.stage_key(a, corpus, None) == pse_train.stage_key(b, corpus, None)
    # the key is the one a twin without the setting always had, and the weights are the same model
    assert pse_train.training_slice(b.pse)["injection"] == PSEConfig().injection
    shapes = [{k: v.shape for k, v in make_pdfnet2(c.pse, 0).state_dict().items()} for c in (a, b)]
    assert shapes[0] == shapes[1]


def _only(**switches) -> PSEConfig:
    """A PSEConfig with every embedding switch off except ``switches`` (the defaults turn some on)."""
    return PSEConfig(**{"emb_mix": 0.0, "emb_drop": 0.0, "emb_degraded": 0.0, **switches})


def test_embedding_augmenter_switches():
    table = {f"u{i}": torch.nn.functional.normalize(torch.randn(4), dim=0) for i in range(6)}
    speaker_of = {f"u{i}": f"s{i // 2}" for i in range(6)}
    pool = {u: -e.repeat(3, 1) for u, e in table.items()}
    ids = ["u0", "u3"]
    clean = torch.stack([table[u] for u in ids])
    rng = np.random.default_rng(0)
    drop = EmbeddingAugmenter(_only(emb_drop=1.0), table, speaker_of)
    assert torch.equal(drop(clean, ids, rng), torch.zeros_like(clean))
    deg = EmbeddingAugmenter(_only(emb_degraded=1.0), table, speaker_of, pool)
    assert torch.equal(deg(clean, ids, rng), -clean)
    mix = EmbeddingAugmenter(_only(emb_mix=1.0, emb_mix_max=0.5), table, speaker_of)
    out = mix(clean, ids, rng)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    assert torch.all((out * clean).sum(-1) > 0)  # pulled toward another speaker, not past it
    assert not torch.equal(out, clean)
    off = EmbeddingAugmenter(_only(), table, speaker_of)
    assert not off.active and torch.equal(off(clean, ids, rng), clean)
    with pytest.raises(ValueError, match="pool"):
        EmbeddingAugmenter(_only(emb_degraded=0.5), table, speaker_of)


def test_refinement_loop_step_moves_toward_the_output_and_keeps_dropped_items():
    from bench.pse.pdfnet2 import make_pdfnet2

    torch.manual_seed(0)
    teacher = FakeTeacher()
    model = make_pdfnet2(PSEConfig(size="tiny"), teacher.dim).train()
    mix = _wave(3, 3200)
    emb = teacher.embed(_wave(3, 3200, seed=9))
    emb[2] = 0.0
    moved = refine_embedding(model, teacher, mix, emb, model.latency_samples, 0.5, np.random.default_rng(1))
    assert model.training  # restored
    assert torch.equal(moved[2], emb[2])
    torch.testing.assert_close(moved[:2].norm(dim=-1), torch.ones(2))
    assert not torch.equal(moved[:2], emb[:2])


def test_training_with_every_switch_runs_and_is_keyed(fake_world, tmp_path):
    corpus, teacher = fake_world
    cfg = _train_cfg()
    cfg.pse.emb_mix, cfg.pse.emb_drop, cfg.pse.refine_train = 0.5, 0.3, 0.5
    model, info = pse_train.train_pse(cfg, corpus, teacher, Cache(tmp_path), progress=False)
    assert info["steps"] == 4 and np.isfinite(info["best_val_si_sdri"])


def test_degraded_pool_is_cached_and_deterministic(tmp_path):
    from tests._data_helpers import make_corpus

    corpus = make_corpus(tmp_path / "corpus", n_speakers=6, n_utts=2, derived=False)
    corpus.key = "k"

    class AnyLength:  # any clip length (the pool holds short enrollments too)
        dim = 4
        identity = "fake:any-length"

        def embed(self, wav):
            w = torch.as_tensor(wav).float()
            feats = torch.stack([w.mean(-1), w.std(-1), w.abs().mean(-1), w.diff(dim=-1).abs().mean(-1)], -1)
            return torch.nn.functional.normalize(feats, dim=-1)

    teacher = AnyLength()
    ids = [u.utt_id for u in corpus.utterances if u.split == "train"]
    cache = Cache(tmp_path / "cache")
    a = degraded_pool(teacher, corpus, ids, cache, 1.0)
    b = degraded_pool(teacher, corpus, ids, cache, 1.0)
    assert set(a) == set(ids) and a[ids[0]].shape == (3, teacher.dim)
    assert all(torch.equal(a[u], b[u]) for u in ids)


def _train_in_process(cache_root: str, out) -> None:
    from bench.cache import Cache
    from tests.pse.test_pdfnet2 import FakeSampler, FakeTeacher, _fake_corpus, _train_cfg

    pse_train._make_sampler = FakeSampler
    pse_train.VAL_MIN = 2
    _, info = pse_train.train_pse(_train_cfg(), _fake_corpus(), FakeTeacher(), Cache(cache_root), progress=False)
    out.put(bool(info["cached"]))


def test_two_workers_on_one_cache_train_a_stage_once(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_train_in_process, args=(str(tmp_path), out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    cached = sorted(out.get(timeout=5) for _ in procs)
    assert cached == [False, True]  # one trained, the other waited for the lock and loaded


def test_build_plan_skips_intact_entries_and_retrains_damaged_ones(fake_world, tmp_path, caplog):
    corpus, teacher = fake_world
    corpus.speakers = lambda split=None: corpus.spk.get(split, [])
    cfg = _train_cfg()
    _, rec = _zoo_entry(tmp_path, corpus, teacher, cfg)
    keys = {"tiny-test": rec["stage_key"], "twin-absent": "0" * 16}
    todo, skipped = zoo.plan_build(keys, tmp_path / "zoo")
    assert todo == ["twin-absent"] and set(skipped) == {"tiny-test"}
    assert rec["sha256"][:16] in skipped["tiny-test"]
    todo, skipped = zoo.plan_build(keys, tmp_path / "zoo", force=True)
    assert todo == ["tiny-test", "twin-absent"] and not skipped
    (tmp_path / "zoo" / "tiny-test.pt").write_bytes(b"broken")
    with caplog.at_level(logging.WARNING, logger="bench"):
        todo, skipped = zoo.plan_build(keys, tmp_path / "zoo")
    assert todo == ["tiny-test", "twin-absent"] and not skipped
    assert "tiny-test.pt is damaged" in caplog.text


def test_build_command_writes_entries_then_skips_them(smoke_run, tmp_path, capsys):
    from pathlib import Path

    _, _, cache, _ = smoke_run
    smoke = str(Path(__file__).resolve().parents[2] / "ablations" / "smoke.yaml")
    args = ["build", "--grid", smoke, "--set", "pse.source=zoo", "--set", f"cache_dir={cache}",
            "--zoo-dir", str(tmp_path / "zoo"), "--no-progress"]
    assert zoo_cli.main(args) == 0
    built = zoo.entries(tmp_path / "zoo")
    assert len(built) == 2
    assert {r["command"] for r in built.values()} == {" ".join(["python -m bench.zoo", *args])}
    capsys.readouterr()
    assert zoo_cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("skipped, in the zoo as") == 2 and "s of training" not in out


def test_entry_name_says_the_level_when_not_hard():
    from bench.config import ExperimentConfig
    from bench.zoo import entry_name

    hard = entry_name(ExperimentConfig(), "0123456789")
    field = entry_name(ExperimentConfig.from_dict({"level": "field"}), "0123456789")
    assert hard == "pdfnet2-cpu-ge2e-personalized-01234567"
    assert field == "pdfnet2-cpu-ge2e-field-personalized-01234567"
    twin = ExperimentConfig.from_dict({"level": "field", "pse": {"personalized": False}})
    assert entry_name(twin) == "pdfnet2-cpu-none-field-nonpersonalized"
