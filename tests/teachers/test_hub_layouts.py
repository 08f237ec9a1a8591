"""Real-size published teachers loaded from the layouts a user with network gets, offline.

Each test writes its own files (randomly initialised weights of the published shapes, the hub's
file names) and lays them out as ``huggingface_hub`` (``models--org--name/{blobs,refs,snapshots}``)
or NeMo's ``from_pretrained`` (``<cache>/<stem>/<md5>/<file>.nemo``) leaves them, then loads them
through ``teacher.source: pretrained`` (and ``local``) and checks the embedding against the same
weights run directly through the library. Slow (real sizes: 20-95 M parameters), so deselected by
default; ``make test-slow`` runs them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config import TeacherConfig
from bench.metrics.complexity import count_params
from bench.teachers import load_teacher
from tests._kd_helpers import voice

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

REVISION = "5c0be3875fda05e81f3dd4fba8b5b8a3e5b3d5e1"  # any 40-hex commit id


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("PSE_KD_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hf_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache (``$HF_HOME/hub``) that the hub client reads."""
    from huggingface_hub import constants

    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))  # read at import; a user sets it before
    return hub


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)


def hf_snapshot(hub: Path, repo_id: str, files: list[Path]) -> Path:
    """Lay ``files`` out as ``huggingface_hub`` does: ``blobs/<sha256>``, ``refs/main`` and
    ``snapshots/<revision>/<name>`` symlinks to the blobs; returns the snapshot folder."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / REVISION
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    for f in files:
        blob = hashlib.sha256(f.read_bytes()).hexdigest()
        _link(f, repo / "blobs" / blob)
        (snap / f.name).symlink_to(Path("..", "..", "blobs", blob))
    return snap


def _clips() -> torch.Tensor:
    return torch.from_numpy(np.stack([voice(130, 700, 2.0, 0), voice(210, 1000, 2.0, 1)]))


def _n_params(t) -> int:
    p = count_params(t)
    return p["learnable"] + p["fixed"]


# --------------------------------------------------------------------------- ECAPA (speechbrain)
ECAPA_HUB_ID = "speechbrain/spkrec-ecapa-voxceleb"
# The hub's inference yaml: ECAPA-TDNN 1024 channels, 192-d, 7205 VoxCeleb speakers, with the global
# embedding normaliser and the label encoder its pretrainer also loads.
ECAPA_HUB_YAML = """\
n_mels: 80
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
out_n_neurons: 7205

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [1024, 1024, 1024, 1024, 3072]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 192
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""
ECAPA_CLASSES = 7205


def write_ecapa_hub_dir(d: Path) -> dict:
    """The hub's six files with random weights of the published shapes; returns the modules."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    from bench.teachers import ecapa

    d.mkdir(parents=True)
    torch.manual_seed(0)
    mods = ecapa.build_modules(ecapa.PRESETS["paper"], ECAPA_CLASSES)
    torch.save(mods["embedding_model"].state_dict(), d / "embedding_model.ckpt")
    torch.save(mods["classifier"].state_dict(), d / "classifier.ckpt")
    torch.save({"count": 18750, "glob_mean": 0.1 * torch.randn(192), "glob_std": torch.ones(1),
                "spk_dict_mean": {}, "spk_dict_std": {}, "spk_dict_count": {}}, d / "mean_var_norm_emb.ckpt")
    enc = CategoricalEncoder()
    enc.update_from_iterable([f"id{i:05d}" for i in range(ECAPA_CLASSES)])
    enc.save(str(d / "label_encoder.txt"))
    (d / "hyperparams.yaml").write_text(ECAPA_HUB_YAML)
    (d / "config.json").write_text('{\n  "speechbrain_interface": "SpeakerRecognition"\n}')
    return mods


def _ecapa_reference(mods: dict, x: torch.Tensor) -> torch.Tensor:
    emb = mods["embedding_model"].eval()
    with torch.no_grad():
        f = mods["mean_var_norm"](mods["compute_features"](x), torch.ones(x.shape[0]))
        return torch.nn.functional.normalize(emb(f).reshape(x.shape[0], -1), dim=-1)


def test_ecapa_real_size_from_hf_cache_and_local(cache, tmp_path, hf_hub):
    files = tmp_path / "spkrec-ecapa-voxceleb"
    mods = write_ecapa_hub_dir(files)
    snap = hf_snapshot(hf_hub, ECAPA_HUB_ID, sorted(files.iterdir()))
    x = _clips()
    ref = _ecapa_reference(mods, x)

    t = load_teacher(TeacherConfig(name="ecapa"), cache, None, "cpu")  # the default hub id
    assert t.source == "pretrained" and t.dim == 192
    assert t.weights_origin.startswith(f"hub: {ECAPA_HUB_ID} ({snap}")
    assert _n_params(t) == 20_767_552 + 192 * ECAPA_CLASSES  # ECAPA-TDNN (C=1024) + AAM classifier
    assert len(t.classifier.hparams.label_encoder) == ECAPA_CLASSES  # the hub's extra files are read
    assert torch.allclose(t.embed(x), ref, atol=1e-5)

    local = load_teacher(TeacherConfig(name="ecapa", source="local", path=str(files)), cache, None, "cpu")
    assert local.weights_hash == t.weights_hash and local.identity != t.identity
    assert torch.allclose(local.embed(x), ref, atol=1e-5)


# --------------------------------------------------------------------------- TitaNet-L (NeMo)
TITANET_CLASSES = 16681  # titanet_large's training speakers


def test_titanet_large_from_nemo_and_hf_caches(cache, tmp_path, hf_hub, monkeypatch):
    pytest.importorskip("nemo.collections.asr", reason="needs nemo_toolkit[asr]")
    from bench.teachers import titanet

    monkeypatch.setenv("NEMO_CACHE_DIR", str(tmp_path / "nemo"))
    torch.manual_seed(0)
    model = titanet.build_model(titanet.titanet_config("paper", num_classes=TITANET_CLASSES))
    model.eval()
    nemo = tmp_path / "titanet-l.nemo"
    model.save_to(str(nemo))
    x = _clips()
    with torch.no_grad():
        lens = torch.full((2,), x.shape[1], dtype=torch.long)
        ref = torch.nn.functional.normalize(model.forward(input_signal=x, input_signal_length=lens)[1], dim=-1)

    # where EncDecSpeakerLabelModel.from_pretrained("titanet_large") keeps its download
    expected = titanet.ngc_cache_file("titanet_large")
    assert expected.name == "titanet-l.nemo" and expected.parent.parent == tmp_path / "nemo" / "titanet-l"
    _link(nemo, expected)
    t = load_teacher(TeacherConfig(name="titanet"), cache, None, "cpu")
    assert t.source == "pretrained" and t.dim == 192 and f"NeMo cache {expected}" in t.weights_origin
    assert 25.0e6 < _n_params(t) < 25.6e6  # TitaNet-L: 25.3 M
    assert torch.allclose(t.embed(x), ref, atol=1e-5)

    # the Hugging Face copy of the same model
    hf_id = "nvidia/speakerverification_en_titanet_large"
    hf_file = tmp_path / "hf-files" / "speakerverification_en_titanet_large.nemo"
    _link(nemo, hf_file)
    snap = hf_snapshot(hf_hub, hf_id, [hf_file])
    t2 = load_teacher(TeacherConfig(name="titanet", hub_id=hf_id), cache, None, "cpu")
    assert t2.weights_origin.startswith(f"hub: {hf_id} ({snap}")  # (its hash covers the file name too)
    assert torch.allclose(t2.embed(x), ref, atol=1e-5)


# --------------------------------------------------------------------------- WavLM (transformers)
WAVLM_HUB_ID = "microsoft/wavlm-base-plus-sv"


def write_wavlm_hub_dir(d: Path):
    """``config.json``, ``preprocessor_config.json`` and ``pytorch_model.bin`` (the hub's names) of a
    WavLM-Base+ x-vector model (768 x 12 layers, TDNN 512-512-512-512-1500, 512-d x-vectors, weighted
    layer sum, 1211 classes for the VoxCeleb1 dev speakers), random weights."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    d.mkdir(parents=True)
    cfg = WavLMConfig(architectures=["WavLMForXVector"], use_weighted_layer_sum=True, num_labels=1211)
    torch.manual_seed(0)
    model = WavLMForXVector(cfg).eval()
    cfg.to_json_file(str(d / "config.json"))
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).to_json_file(str(d / "preprocessor_config.json"))
    return model


def test_wavlm_base_plus_sv_from_hf_cache_and_local(cache, tmp_path, hf_hub):
    from transformers import Wav2Vec2FeatureExtractor

    files = tmp_path / "wavlm-base-plus-sv"
    model = write_wavlm_hub_dir(files)
    snap = hf_snapshot(hf_hub, WAVLM_HUB_ID, sorted(files.iterdir()))
    x = _clips()
    fe = Wav2Vec2FeatureExtractor.from_pretrained(str(files))
    inputs = fe(list(x.numpy()), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model(input_values=inputs["input_values"]).embeddings, dim=-1)

    t = load_teacher(TeacherConfig(name="wavlm"), cache, None, "cpu")
    assert t.source == "pretrained" and t.dim == 512
    assert t.weights_origin.startswith(f"hub: {WAVLM_HUB_ID} ({snap}")
    assert 100e6 < _n_params(t) < 102e6  # WavLM-Base+ (94.4 M) + the x-vector head
    assert torch.allclose(t.embed(x), ref, atol=1e-4)

    local = load_teacher(TeacherConfig(name="wavlm", source="local", path=str(files)), cache, None, "cpu")
    assert local.weights_hash == t.weights_hash
    assert torch.allclose(local.embed(x), ref, atol=1e-4)
