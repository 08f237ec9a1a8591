"""``wavlm`` teacher: transformers ``WavLMForXVector`` (dim 512 by default).

Every source ends in :func:`load_local`, ``WavLMForXVector.from_pretrained(DIR,
local_files_only=True)`` on a ``save_pretrained`` directory (plus the feature extractor's
``preprocessor_config.json``; its ``do_normalize`` decides per-utterance zero-mean/unit-variance
input normalisation, default on):

- ``pretrained``: hub id (default ``microsoft/wavlm-base-plus-sv``) resolved to its HF cache
  snapshot (downloaded when online; offline misses fail fast);
- ``local``: ``teacher.path`` is such a directory;
- ``trained``: a tiny WavLM x-vector config (``cpu`` preset) trained in-suite with AM-softmax
  and written with ``save_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bench.cache import config_hash, file_hash
from bench.teachers import _train, base
from bench.trainloop import seed_everything

DEFAULT_HUB_ID = "microsoft/wavlm-base-plus-sv"

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (16,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
        "tdnn_dim": (32, 32, 32, 32, 64), "num_buckets": 32, "max_bucket_distance": 100,
    },
    "cpu": {
        "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
        "conv_dim": (64,) * 7, "num_conv_pos_embeddings": 32, "num_conv_pos_embedding_groups": 8,
        "tdnn_dim": (128, 128, 128, 128, 384), "num_buckets": 64, "max_bucket_distance": 400,
    },
}


def wavlm_config(preset: str = "cpu", num_labels: int = 2, xvector_dim: int = 512) -> Any:
    """A ``WavLMConfig`` for an x-vector model of the given size preset (``tiny``, ``cpu``)."""
    from transformers import WavLMConfig

    return WavLMConfig(**PRESETS[preset], xvector_output_dim=xvector_dim, num_labels=num_labels,
                       layerdrop=0.0, mask_time_prob=0.0, hidden_dropout=0.0, attention_dropout=0.0,
                       activation_dropout=0.0, feat_proj_dropout=0.0, apply_spec_augment=False)


# Weights are written in shards of at most this size (transformers' own sharded layout: numbered
# ``model-0000k-of-0000n.safetensors`` files and ``model.safetensors.index.json``), so that a trained
# teacher fits the zoo's per-file limit; the weights themselves are unchanged.
MAX_SHARD_SIZE = "4MB"


def save_transformers_dir(model: Any, directory: str | Path) -> Path:
    """``save_pretrained`` the model (sharded, :data:`MAX_SHARD_SIZE`) and a matching ``Wav2Vec2FeatureExtractor``."""
    from transformers import Wav2Vec2FeatureExtractor

    d = Path(directory)
    model.save_pretrained(str(d), max_shard_size=MAX_SHARD_SIZE)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(str(d))
    return d


class WavLMTeacher(base.Teacher):
    def __init__(self, model: Any, normalize: bool, source: str, weights_hash: str, origin: str) -> None:
        super().__init__("wavlm", int(model.config.xvector_output_dim), source, weights_hash, origin)
        self.model = model
        self.normalize_input = normalize

    def _embed(self, wav: torch.Tensor) -> torch.Tensor:
        if self.normalize_input:
            wav = (wav - wav.mean(-1, keepdim=True)) / torch.sqrt(wav.var(-1, keepdim=True, unbiased=False) + 1e-7)
        return self.model(input_values=wav).embeddings


def load_local(path: str | Path, source: str = "local", origin: str | None = None, device: Any = "cpu") -> WavLMTeacher:
    """``WavLMForXVector.from_pretrained(path, local_files_only=True)``."""
    d = base.check_local_path("wavlm", str(path), "a transformers save_pretrained directory")
    from transformers import WavLMForXVector

    try:
        model = WavLMForXVector.from_pretrained(str(d), local_files_only=True)
    except Exception as exc:
        raise base.TeacherLoadError(f"teacher 'wavlm': transformers could not load {d}: {exc}") from exc
    model.eval()
    normalize = True
    pre = d / "preprocessor_config.json"
    if pre.is_file():
        normalize = bool(json.loads(pre.read_text()).get("do_normalize", True))
    weights = sorted(list(d.glob("*.safetensors")) + list(d.glob("*.bin")))
    h = config_hash(*(file_hash(w) for w in weights)) if weights else file_hash(d)
    return WavLMTeacher(model.to(str(device)), normalize, source, h, origin or f"local: {d} (sha256 {h})")


make_wavlm = base.register_teacher(
    "wavlm", pretrained=lambda cfg, cache, corpus, device: _from_hub(cfg.hub_id or DEFAULT_HUB_ID, device),
    local=lambda cfg, cache, corpus, device: load_local(cfg.path, device=device),
    trained=lambda cfg, cache, corpus, device: _trained(cfg, cache, corpus, device))


def _from_hub(hub_id: str, device) -> WavLMTeacher:
    d = base.resolve_hf_snapshot(hub_id, "wavlm")
    t = load_local(d, "pretrained", device=device)
    t.weights_origin = f"hub: {hub_id} ({d}, sha256 {t.weights_hash})"
    return t


def _trained(cfg, cache, corpus, device) -> WavLMTeacher:
    def build(model_dir: Path) -> dict:
        from transformers import WavLMForXVector

        n_spk = len(corpus.speakers("train"))
        seed_everything(0)
        model = WavLMForXVector(wavlm_config(cfg.train_size, num_labels=max(n_spk, 2)))

        def embed_train(wav: torch.Tensor) -> torch.Tensor:
            wav = (wav - wav.mean(-1, keepdim=True)) / torch.sqrt(wav.var(-1, keepdim=True, unbiased=False) + 1e-7)
            return model(input_values=wav).embeddings

        def embed_eval(wav: torch.Tensor) -> torch.Tensor:
            model.eval()
            with torch.no_grad():
                return embed_train(wav)

        info = _train.train_speaker_encoder("wavlm", model, embed_train, embed_eval, model.config.xvector_output_dim, corpus, cfg, default_lr=1e-3)
        info.pop("head_weight")
        save_transformers_dir(model, model_dir)
        return info

    return _train.trained_teacher("wavlm", cfg, cache, corpus, "transformers", build,
                                  lambda model_dir: load_local(model_dir, "trained", device=device), PRESETS)
