import importlib.util
import time

import numpy as np
import pytest
import torch

from bench import registry
from bench.config import TeacherConfig
from bench.teachers import TeacherLoadError, load_teacher
from bench.teachers.emb_cache import EmbeddingCache
from tests._kd_helpers import FakeCorpus, FakeTeacher, voice


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("PSE_KD_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_registered():
    assert {"ge2e", "vfl", "ecapa", "titanet", "wavlm"} <= set(registry.names("teacher"))


def test_ge2e_matches_resemblyzer(cache):
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume

    t = load_teacher(TeacherConfig(), cache, None, "cpu")
    assert t.dim == 256 and t.source == "pretrained" and "resemblyzer" in t.weights_origin
    assert t.identity.startswith("ge2e:pretrained:")
    ve = VoiceEncoder("cpu", verbose=False)
    for n, seed in ((16000, 0), (48000, 1)):
        x = normalize_volume(voice(130 + 40 * seed, 700, n / 16000, seed), -30, increase_only=True)
        ref = ve.embed_utterance(x)
        got = t.embed(torch.from_numpy(x)[None])[0].numpy()
        assert float(ref @ got) > 0.95


def test_ge2e_batch_deterministic_and_degenerate_rows(cache):
    t = load_teacher(TeacherConfig(), cache, None, "cpu")
    x = torch.from_numpy(np.stack([voice(120, 600, 1.0, 0), voice(200, 900, 1.0, 1), np.zeros(16000, np.float32)]))
    e1, e2 = t.embed(x), t.embed(x)
    assert e1.shape == (3, 256) and torch.equal(e1, e2)
    assert torch.allclose(e1.norm(dim=-1), torch.ones(3), atol=1e-5)
    # batching does not change an item's embedding
    assert torch.allclose(t.embed(x[1:2])[0], e1[1], atol=1e-5)


def test_emb_cache_computes_only_misses_and_persists(cache):
    corpus = FakeCorpus(n_train=2, n_val=0, n_test=0, n_utts=2)
    teacher = FakeTeacher(16)
    ec = EmbeddingCache(cache, teacher, corpus.key)
    ids = ["spk00_0", "spk00_1", "spk00_0"]
    crops = [(0, 8000), (0, 8000), (0, 8000)]
    e = ec.get_many(ids, crops, corpus.audio)
    assert e.shape == (3, 16) and teacher.calls == 2
    assert torch.equal(e[0], e[2])
    e2 = ec.get_many(["spk00_0", "spk01_0"], [(0, 8000), None], corpus.audio)
    assert teacher.calls == 3 and torch.equal(e2[0], e[0])
    ec2 = EmbeddingCache(cache, teacher, corpus.key)  # reloaded from disk
    assert len(ec2) == 3
    assert torch.equal(ec2.get_many(ids, crops), e)
    assert teacher.calls == 3


def _assert_teacher_ok(t, dim):
    x = torch.from_numpy(np.stack([voice(120, 600, 1.0, 0), voice(210, 1000, 1.0, 3)]))
    e1, e2 = t.embed(x), t.embed(x)
    assert e1.shape == (2, dim) and torch.equal(e1, e2)
    assert torch.allclose(e1.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert len(t.weights_hash) >= 8 and t.weights_hash in t.identity


def test_ecapa_local_speechbrain_dir(cache, tmp_path):
    from bench.teachers import ecapa

    torch.manual_seed(0)
    mods = ecapa.build_modules(ecapa.PRESETS["tiny"], 5)
    d = ecapa.save_speechbrain_dir(tmp_path / "sb", ecapa.PRESETS["tiny"], mods)
    assert (d / "hyperparams.yaml").is_file() and (d / "embedding_model.ckpt").is_file()
    t = load_teacher(TeacherConfig(name="ecapa", source="local", path=str(d)), cache, None, "cpu")
    assert t.source == "local" and str(d) in t.weights_origin
    _assert_teacher_ok(t, 192)
    # same weights as the modules we saved
    x = torch.from_numpy(voice(150, 700, 1.0, 2))[None]
    mods["embedding_model"].eval()
    with torch.no_grad():
        f = mods["mean_var_norm"](mods["compute_features"](x), torch.ones(1))
        ref = torch.nn.functional.normalize(mods["embedding_model"](f).reshape(1, -1), dim=-1)
    assert torch.allclose(ref, t.embed(x), atol=1e-5)


def test_wavlm_local_transformers_dir(cache, tmp_path):
    from transformers import WavLMForXVector

    from bench.teachers import wavlm

    torch.manual_seed(0)
    m = WavLMForXVector(wavlm.wavlm_config("tiny", num_labels=3))
    d = wavlm.save_transformers_dir(m, tmp_path / "wl")
    t = load_teacher(TeacherConfig(name="wavlm", source="local", path=str(d)), cache, None, "cpu")
    _assert_teacher_ok(t, 512)


def test_wavlm_cpu_preset_is_saved_in_shards_that_fit_the_zoo(cache, tmp_path):
    """The in-suite WavLM (``cpu`` preset, about 5.4 MB of float32 weights in one file) is written in
    transformers' sharded layout, every file under the zoo's per-file limit, and loads back to the same
    embeddings."""
    from transformers import WavLMForXVector

    from bench.teachers import wavlm
    from bench.zoo.__main__ import MAX_FILE_BYTES

    torch.manual_seed(0)
    m = WavLMForXVector(wavlm.wavlm_config("cpu", num_labels=45)).eval()
    d = wavlm.save_transformers_dir(m, tmp_path / "wl")
    sizes = {p.name: p.stat().st_size for p in d.iterdir()}
    assert sum(sizes.values()) > MAX_FILE_BYTES  # one file would not fit
    assert max(sizes.values()) <= MAX_FILE_BYTES, sizes
    assert len([n for n in sizes if n.endswith(".safetensors")]) >= 2
    assert "model.safetensors.index.json" in sizes
    t = load_teacher(TeacherConfig(name="wavlm", source="local", path=str(d)), cache, None, "cpu")
    x = torch.from_numpy(voice(150, 700, 1.0, 2))[None]
    with torch.no_grad():
        xn = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-7)
        ref = torch.nn.functional.normalize(m(input_values=xn).embeddings, dim=-1)
    assert torch.allclose(ref, t.embed(x), atol=1e-5)


def _nemo_ok() -> bool:
    if importlib.util.find_spec("nemo") is None:
        return False
    try:
        import hydra  # noqa: F401
        import lightning  # noqa: F401
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.heavy
@pytest.mark.skipif(not _nemo_ok(), reason="NeMo ASR collection needs nemo_toolkit[asr] (hydra, lightning, omegaconf)")
def test_titanet_local_nemo_file(cache, tmp_path):
    from bench.teachers import titanet

    torch.manual_seed(0)
    m = titanet.build_model(titanet.titanet_config("tiny", num_classes=3))
    m.save_to(str(tmp_path / "tiny.nemo"))
    t = load_teacher(TeacherConfig(name="titanet", source="local", path=str(tmp_path / "tiny.nemo")), cache, None, "cpu")
    _assert_teacher_ok(t, 192)
    start = time.time()
    with pytest.raises(TeacherLoadError) as err:
        load_teacher(TeacherConfig(name="titanet"), cache, None, "cpu")
    assert time.time() - start < 5
    msg = str(err.value)
    assert "titanet_large" in msg and "NeMo" in msg and "source=local" in msg and "source=trained" in msg


@pytest.mark.parametrize("name,hub", [("ecapa", "speechbrain/spkrec-ecapa-voxceleb"), ("wavlm", "microsoft/wavlm-base-plus-sv")])
def test_hub_id_offline_fails_fast(cache, name, hub):
    start = time.time()
    with pytest.raises(TeacherLoadError) as err:
        load_teacher(TeacherConfig(name=name), cache, None, "cpu")
    assert time.time() - start < 5
    msg = str(err.value)
    assert hub in msg and "huggingface" in msg and "teacher.path" in msg and "source=trained" in msg


def test_local_missing_path_message(cache, tmp_path):
    with pytest.raises(TeacherLoadError, match="does not exist"):
        load_teacher(TeacherConfig(name="ecapa", source="local", path=str(tmp_path / "nope")), cache, None, "cpu")


def test_ge2e_trained_roundtrip(cache):
    corpus = FakeCorpus(n_train=3, n_val=2, n_test=0, n_utts=2)
    cfg = TeacherConfig(name="ge2e", source="trained", train_steps=3)
    t = load_teacher(cfg, cache, corpus, "cpu")
    assert t.source == "trained" and "trained in-suite" in t.weights_origin and "val EER" in t.weights_origin
    assert f"sha256 {t.weights_hash}" in t.weights_origin
    _assert_teacher_ok(t, 256)
    t2 = load_teacher(cfg, cache, corpus, "cpu")  # cached: loaded back through the local path
    assert t2.identity == t.identity


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ecapa", "titanet", "wavlm"])
def test_trained_roundtrip(cache, name):
    """Each library's in-suite training writes its own format and loads back through it."""
    corpus = FakeCorpus(n_train=3, n_val=2, n_test=0, n_utts=2)
    cfg = TeacherConfig(name=name, source="trained", train_steps=2, train_size="tiny")
    t = load_teacher(cfg, cache, corpus, "cpu")
    assert (cache.root / "teacher").is_dir() and "trained in-suite" in t.weights_origin
    assert f"sha256 {t.weights_hash}" in t.weights_origin
    _assert_teacher_ok(t, t.dim)
    assert load_teacher(cfg, cache, corpus, "cpu").identity == t.identity  # cached: loaded back
