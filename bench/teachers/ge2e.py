"""``ge2e`` teacher: resemblyzer's GE2E LSTM d-vector (dim 256), batched in torch.

The 40-band mel spectrogram (power, not log; 25 ms / 10 ms, Slaney filters) matches
resemblyzer's librosa parameters; each clip is cut into 1.6 s partials at resemblyzer's
rate (1.3 / s, min coverage 0.75; clips shorter than 1.6 s are zero-padded) and the
L2-normalised mean of the partial embeddings is returned, as ``VoiceEncoder.embed_utterance``
does. Volume is normalised up to -30 dBFS first (``preprocess_wav``'s increase-only rule;
silence trimming is not applied).

Sources: ``pretrained`` = weights packaged in the resemblyzer wheel; ``local`` = a
resemblyzer-format ``.pt`` (``{"model_state": state_dict}``); ``trained`` = the same
architecture (hidden 128, 2 layers) trained in-suite, saved in that format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.audio import SR
from bench.cache import atomic_path, file_hash
from bench.teachers import _train
from bench.teachers.base import (
    Teacher,
    TeacherLoadError,
    check_local_path,
    register_teacher,
)

N_FFT, HOP, N_MELS = 400, 160, 40
PARTIAL = 160  # frames (1.6 s)
RATE, MIN_COVERAGE = 1.3, 0.75
TARGET_DBFS = -30.0


def packaged_weights() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise TeacherLoadError(
            "teacher 'ge2e': the resemblyzer package is not installed (pip install --no-deps "
            "resemblyzer; it ships the GE2E weights). Other sources: teacher.source=local with "
            "teacher.path=<resemblyzer-format .pt>, or teacher.source=trained."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"


def partial_slices(n_samples: int) -> list[int]:
    """Start frames of resemblyzer's partial utterances for a clip of ``n_samples``."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((SR / RATE) / HOP))
    steps = max(1, n_frames - PARTIAL + frame_step + 1)
    starts = list(range(0, steps, frame_step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    return starts


class GE2ETeacher(Teacher):
    def __init__(self, state: dict[str, torch.Tensor], source: str, weights_hash: str, origin: str) -> None:
        hidden = state["lstm.weight_hh_l0"].shape[1]
        layers = len([k for k in state if k.startswith("lstm.weight_ih_l")])
        dim = state["linear.weight"].shape[0]
        super().__init__("ge2e", dim, source, weights_hash, origin)
        self.lstm = nn.LSTM(N_MELS, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)
        self.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}, strict=False)
        import librosa

        fb = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)
        self.register_buffer("mel_fb", torch.from_numpy(fb), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.eval()

    def mels(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B,T]`` -> power mel ``[B, frames, 40]`` (librosa.feature.melspectrogram equivalent)."""
        spec = torch.stft(wav, N_FFT, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True)
        return (self.mel_fb @ spec.abs().pow(2)).transpose(1, 2)

    def partial_embeds(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        return torch.nn.functional.normalize(torch.relu(self.linear(hidden[-1])), dim=-1, eps=1e-12)

    def _normalize_volume(self, wav: torch.Tensor) -> torch.Tensor:
        power = wav.pow(2).mean(-1, keepdim=True).clamp_min(1e-10)
        change = TARGET_DBFS - 10 * torch.log10(power)
        return wav * torch.where(change > 0, 10 ** (change / 20), torch.ones_like(change))

    def _forward_train(self, wav: torch.Tensor) -> torch.Tensor:
        """Whole-clip embedding with gradients (used for in-suite training)."""
        return torch.relu(self.linear(self.lstm(torch.log1p(self.mels(self._normalize_volume(wav))))[1][0][-1]))

    def _embed(self, wav: torch.Tensor) -> torch.Tensor:
        wav = self._normalize_volume(wav)
        b, n = wav.shape
        starts = partial_slices(n)
        need = (starts[-1] + PARTIAL) * HOP
        if need >= n:
            wav = torch.nn.functional.pad(wav, (0, need - n))
        mel = self.mels(wav)
        if self.info.get("log_mel"):
            mel = torch.log1p(mel)
        parts = torch.stack([mel[:, s : s + PARTIAL] for s in starts], dim=1)  # [B,P,160,40]
        emb = self.partial_embeds(parts.reshape(b * len(starts), PARTIAL, N_MELS))
        return emb.reshape(b, len(starts), -1).mean(1)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "lstm.weight_hh_l0" not in state:
        raise TeacherLoadError(f"teacher 'ge2e': {path} is not a resemblyzer-format checkpoint ({{'model_state': ...}})")
    return state


def load_local(path: str | Path, source: str = "local", origin: str | None = None) -> GE2ETeacher:
    p = check_local_path("ge2e", str(path), "a resemblyzer-format .pt file")
    if p.is_dir():
        p = p / "pretrained.pt"
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    h = file_hash(p)
    t = GE2ETeacher(_load_state(p), source, h, origin or f"local: {p} (sha256 {h})")
    if isinstance(ckpt, dict) and ckpt.get("log_mel"):
        t.info["log_mel"] = True
    return t


make_ge2e = register_teacher(
    "ge2e", pretrained=lambda cfg, cache, corpus, device: _packaged(cfg),
    local=lambda cfg, cache, corpus, device: load_local(cfg.path),
    trained=lambda cfg, cache, corpus, device: _trained(cfg, cache, corpus))


def _packaged(cfg) -> GE2ETeacher:
    """The GE2E weights packaged in resemblyzer (``hub_id`` must be empty)."""
    if cfg.hub_id:
        raise TeacherLoadError(
            f"teacher 'ge2e' has no hub checkpoints (hub_id={cfg.hub_id!r}); use source=pretrained "
            "with an empty hub_id (packaged resemblyzer weights) or source=local with teacher.path"
        )
    p = packaged_weights()
    import importlib.metadata as md

    h = file_hash(p)
    version = md.version("resemblyzer")
    return GE2ETeacher(_load_state(p), "pretrained", h, f"resemblyzer {version} packaged GE2E weights (pretrained.pt sha256 {h})")


def _trained(cfg, cache, corpus) -> GE2ETeacher:
    def build(path: Path) -> dict:
        hidden, layers = (128, 2) if cfg.train_size != "paper" else (256, 3)
        lstm = nn.LSTM(N_MELS, hidden, layers, batch_first=True)
        linear = nn.Linear(hidden, 256)
        state = {**{f"lstm.{k}": v for k, v in lstm.state_dict().items()}, **{f"linear.{k}": v for k, v in linear.state_dict().items()}}
        net = GE2ETeacher(state, "trained", "untrained", "")
        net.info["log_mel"] = True
        for p in net.parameters():
            p.requires_grad_(True)
        info = _train.train_speaker_encoder(
            "ge2e", net, net._forward_train, net.embed, 256, corpus, cfg, seed=0
        )
        info.pop("head_weight")
        out = {k: v for k, v in net.state_dict().items() if k.startswith(("lstm.", "linear."))}
        with atomic_path(path) as tmp:
            torch.save({"model_state": out, "log_mel": True}, tmp)
        return info

    return _train.trained_teacher("ge2e", cfg, cache, corpus, "ge2e.pt", build,
                                  lambda path: load_local(path, source="trained"))


__all__ = ["GE2ETeacher", "make_ge2e", "load_local", "partial_slices"]
