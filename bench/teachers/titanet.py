"""``titanet`` teacher: NeMo ``EncDecSpeakerLabelModel`` (TitaNet, dim 192).

Every source ends in :func:`load_local`, ``EncDecSpeakerLabelModel.restore_from(<file>.nemo)``:

- ``pretrained``: NGC name (default ``titanet_large``) looked up where
  ``EncDecSpeakerLabelModel.from_pretrained`` keeps it: NeMo's cache (``$NEMO_CACHE_DIR``, else
  ``~/.cache/torch/NeMo/NeMo_<version>``) ``/<file stem>/<md5 of location + description>/<file>``,
  the file named as in NeMo's model list (``titanet-l.nemo`` for ``titanet_large``), or that file
  name anywhere under the cache root (another NeMo version's cache); a HF id ``org/name``
  (``nvidia/speakerverification_en_titanet_large``) is its HF cache snapshot's ``.nemo``. Online,
  ``from_pretrained`` downloads a miss; offline misses fail fast;
- ``local``: ``teacher.path`` is a ``.nemo`` file;
- ``trained``: a small TitaNet (:func:`titanet_config`, ``cpu`` preset) built from a config dict,
  trained in-suite with AM-softmax and saved with ``save_to`` as a ``.nemo`` file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from bench.cache import file_hash
from bench.teachers import _train, base

DEFAULT_HUB_ID = "titanet_large"

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"features": 40, "filters": 32, "repeat": 1, "kernels": [3, 5], "final": 96, "attention": 16},
    "cpu": {"features": 80, "filters": 128, "repeat": 2, "kernels": [3, 7, 11], "final": 384, "attention": 64},
    "paper": {"features": 80, "filters": 1024, "repeat": 3, "kernels": [7, 11, 15], "final": 3072, "attention": 128},
}


def titanet_config(preset: str | dict[str, Any] = "cpu", num_classes: int = 2, emb_dim: int = 192) -> dict[str, Any]:
    """NeMo model config (plain dict) of a TitaNet-style speaker model."""
    p = PRESETS[preset] if isinstance(preset, str) else preset

    def block(filters: int, kernel: int, repeat: int, residual: bool) -> dict[str, Any]:
        return {
            "filters": filters, "repeat": repeat, "kernel": [kernel], "stride": [1], "dilation": [1],
            "dropout": 0.0, "residual": residual, "separable": True, "se": True, "se_context_size": -1,
        }

    jasper = [block(p["filters"], 3, 1, False)]
    jasper += [block(p["filters"], k, p["repeat"], True) for k in p["kernels"]]
    jasper += [block(p["final"], 1, 1, False)]
    return {
        "sample_rate": 16000,
        "train_ds": {"manifest_filepath": None, "sample_rate": 16000, "labels": None, "batch_size": 32, "shuffle": True},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature", "window_size": 0.025, "sample_rate": 16000, "window_stride": 0.01,
            "window": "hann", "features": p["features"], "n_fft": 512, "frame_splicing": 1, "dither": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": p["features"], "activation": "relu", "conv_mask": True, "jasper": jasper,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.SpeakerDecoder",
            "feat_in": p["final"], "num_classes": num_classes, "pool_mode": "attention",
            "emb_sizes": emb_dim, "attention_channels": p["attention"],
        },
        "loss": {"_target_": "nemo.collections.asr.losses.angularloss.AngularSoftmaxLoss", "scale": 30, "margin": 0.2},
    }


def build_model(cfg_dict: dict[str, Any]) -> Any:
    """Instantiate ``EncDecSpeakerLabelModel`` from a config dict (offline)."""
    from nemo.collections.asr.models import EncDecSpeakerLabelModel
    from omegaconf import OmegaConf

    return EncDecSpeakerLabelModel(cfg=OmegaConf.create(cfg_dict))


class TitaNetTeacher(base.Teacher):
    def __init__(self, model: Any, dim: int, source: str, weights_hash: str, origin: str) -> None:
        super().__init__("titanet", dim, source, weights_hash, origin)
        self.model = model

    def _embed(self, wav: torch.Tensor) -> torch.Tensor:
        lens = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
        _, emb = self.model.forward(input_signal=wav, input_signal_length=lens)
        return emb


def _emb_dim(model: Any) -> int:
    dec = model.cfg.decoder
    sizes = dec.get("emb_sizes", 192)
    return int(sizes[-1] if isinstance(sizes, (list, tuple)) or hasattr(sizes, "__len__") and not isinstance(sizes, (int, str)) else sizes)


def load_local(path: str | Path, source: str = "local", origin: str | None = None, device: Any = "cpu") -> TitaNetTeacher:
    """Restore a ``.nemo`` speaker model with ``EncDecSpeakerLabelModel.restore_from``."""
    p = base.check_local_path("titanet", str(path), "a NeMo .nemo file")
    if p.is_dir():
        files = sorted(p.glob("*.nemo"))
        if not files:
            raise base.TeacherLoadError(f"teacher 'titanet': no .nemo file in {p}")
        p = files[0]
    from nemo.collections.asr.models import EncDecSpeakerLabelModel

    try:
        model = EncDecSpeakerLabelModel.restore_from(str(p), map_location=torch.device(str(device)))
    except Exception as exc:
        raise base.TeacherLoadError(f"teacher 'titanet': NeMo could not restore {p}: {exc}") from exc
    model.eval()
    h = file_hash(p)
    return TitaNetTeacher(model, _emb_dim(model), source, h, origin or f"local: {p} (sha256 {h})")


def nemo_cache_dir() -> Path:
    """The root searched for cached ``.nemo`` files (every NeMo version's cache below it)."""
    return Path(os.environ.get("NEMO_CACHE_DIR") or Path.home() / ".cache" / "torch" / "NeMo")


def ngc_cache_file(hub_id: str) -> Path | None:
    """Where ``EncDecSpeakerLabelModel.from_pretrained(hub_id)`` stores the NGC model's ``.nemo``
    (NeMo's own rule, ``nemo.core.classes.common._get_ngc_pretrained_model_info``), or ``None`` when
    NeMo's model list has no such name or alias."""
    import hashlib
    from pathlib import PurePosixPath

    from nemo.collections.asr.models import EncDecSpeakerLabelModel
    from nemo.utils.data_utils import resolve_cache_dir

    for info in EncDecSpeakerLabelModel.list_available_models() or []:
        if hub_id == info.pretrained_model_name or hub_id in (info.aliases or []):
            name = PurePosixPath(info.location).name
            sub = hashlib.md5((info.location + info.description).encode("utf-8")).hexdigest()
            return Path(resolve_cache_dir()) / name[: -len(".nemo")] / sub / name
    return None


def _cached(hub_id: str, expected: Path | None) -> Path | None:
    """NeMo's own cache file of ``hub_id`` if there, else the newest file of that name (or
    ``<hub_id>.nemo``) under :func:`nemo_cache_dir`."""
    if expected is not None and expected.is_file():
        return expected
    root = nemo_cache_dir()
    names = {f"{hub_id}.nemo"} | ({expected.name} if expected is not None else set())
    hits = sorted(p for n in names for p in root.rglob(n)) if root.is_dir() else []
    return hits[-1] if hits else None


def _from_nemo_cache(path: Path, hub_id: str, device: Any) -> TitaNetTeacher:
    t = load_local(path, "pretrained", device=device)
    t.weights_origin = f"hub: {hub_id} (NeMo cache {path}, sha256 {t.weights_hash})"
    return t


def _pretrained(hub_id: str, device: Any) -> TitaNetTeacher:
    if "/" in hub_id:  # Hugging Face repo holding a .nemo file
        d = base.resolve_hf_snapshot(hub_id, "titanet", allow_patterns=["*.nemo"])
        t = load_local(d, "pretrained", device=device)
        t.weights_origin = f"hub: {hub_id} ({d}, sha256 {t.weights_hash})"
        return t
    expected = ngc_cache_file(hub_id)
    hit = _cached(hub_id, expected)
    if hit is not None:
        return _from_nemo_cache(hit, hub_id, device)
    where = f"NeMo cache {expected or nemo_cache_dir()}"
    if base.is_offline():
        raise base.TeacherLoadError(base.offline_message("titanet", hub_id, where))
    from nemo.collections.asr.models import EncDecSpeakerLabelModel

    try:
        path = Path(EncDecSpeakerLabelModel.from_pretrained(hub_id, map_location="cpu", return_model_file=True))
    except Exception as exc:
        raise base.TeacherLoadError(base.offline_message("titanet", hub_id, where) + f" (download failed: {exc})") from exc
    return _from_nemo_cache(path, hub_id, device)


make_titanet = base.register_teacher(
    "titanet", pretrained=lambda cfg, cache, corpus, device: _pretrained(cfg.hub_id or DEFAULT_HUB_ID, device),
    local=lambda cfg, cache, corpus, device: load_local(cfg.path, device=device),
    trained=lambda cfg, cache, corpus, device: _trained(cfg, cache, corpus, device))


def _trained(cfg, cache, corpus, device) -> TitaNetTeacher:
    def build(path: Path) -> dict:
        n_spk = len([s for s in corpus.speakers("train")])
        model = build_model(titanet_config(cfg.train_size, num_classes=max(n_spk, 2)))

        def embed_train(wav: torch.Tensor) -> torch.Tensor:
            lens = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
            return model.forward(input_signal=wav, input_signal_length=lens)[1]

        def embed_eval(wav: torch.Tensor) -> torch.Tensor:
            model.eval()
            with torch.no_grad():
                return embed_train(wav)

        info = _train.train_speaker_encoder("titanet", model, embed_train, embed_eval, _emb_dim(model), corpus, cfg)
        info.pop("head_weight")
        tmp = path.parent / ".titanet.tmp.nemo"
        model.save_to(str(tmp))
        os.replace(tmp, path)
        return info

    return _train.trained_teacher("titanet", cfg, cache, corpus, "titanet.nemo", build,
                                  lambda path: load_local(path, "trained", device=device), PRESETS)
