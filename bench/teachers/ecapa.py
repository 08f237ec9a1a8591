"""``ecapa`` teacher: speechbrain ECAPA-TDNN (dim 192) through ``EncoderClassifier``.

Every source ends in the same loader, :func:`load_local`, which calls
``EncoderClassifier.from_hparams(source=DIR, savedir=<cache>/teacher_hub/ecapa/<hash>,
overrides={"pretrained_path": DIR})`` on a speechbrain model directory (hyperparams.yaml +
the checkpoints its pretrainer lists):

- ``pretrained``: hub id (default ``speechbrain/spkrec-ecapa-voxceleb``) resolved to its HF cache
  snapshot (or downloaded when online; offline misses fail fast);
- ``local``: ``teacher.path`` is such a directory;
- ``trained``: a CPU-sized ECAPA (``channels`` 128, 80 fbank) trained in-suite with AM-softmax,
  written as hyperparams.yaml + embedding_model.ckpt + classifier.ckpt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.cache import atomic_path, atomic_write_text, config_hash, file_hash
from bench.teachers import _train, base

DEFAULT_HUB_ID = "speechbrain/spkrec-ecapa-voxceleb"

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_mels": 40, "channels": [32, 32, 32, 32, 96], "attention_channels": 16, "lin_neurons": 192},
    "cpu": {"n_mels": 80, "channels": [128, 128, 128, 128, 384], "attention_channels": 64, "lin_neurons": 192},
    "paper": {"n_mels": 80, "channels": [1024, 1024, 1024, 1024, 3072], "attention_channels": 128, "lin_neurons": 192},
}

HPARAMS_TEMPLATE = """\
# speechbrain EncoderClassifier hyperparameters (written by pse-kd-bench)
pretrained_path: {pretrained_path}
n_mels: {n_mels}
out_n_neurons: {out_n_neurons}

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {channels}
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: {attention_channels}
    lin_neurons: {lin_neurons}

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {lin_neurons}
    out_neurons: !ref <out_n_neurons>

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
"""


def build_modules(arch: dict[str, Any], n_classes: int) -> dict[str, torch.nn.Module]:
    """Fresh speechbrain modules of an ECAPA classifier with architecture ``arch``."""
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.processing.features import InputNormalization

    return {
        "compute_features": Fbank(n_mels=arch["n_mels"]),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": ECAPA_TDNN(
            arch["n_mels"],
            channels=list(arch["channels"]),
            kernel_sizes=[5, 3, 3, 3, 1],
            dilations=[1, 2, 3, 4, 1],
            attention_channels=arch["attention_channels"],
            lin_neurons=arch["lin_neurons"],
        ),
        "classifier": Classifier(input_size=arch["lin_neurons"], out_neurons=n_classes),
    }


def save_speechbrain_dir(directory: str | Path, arch: dict[str, Any], modules: dict[str, torch.nn.Module]) -> Path:
    """Write a speechbrain model directory (hyperparams.yaml + checkpoints) loadable by
    ``EncoderClassifier.from_hparams``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    n_classes = modules["classifier"].weight.shape[0]
    for name in ("embedding_model", "classifier"):
        with atomic_path(d / f"{name}.ckpt") as tmp:
            torch.save(modules[name].state_dict(), tmp)
    text = HPARAMS_TEMPLATE.format(pretrained_path=str(d), out_n_neurons=n_classes, **arch)
    atomic_write_text(d / "hyperparams.yaml", text)
    return d


class ECAPATeacher(base.Teacher):
    def __init__(self, classifier: Any, dim: int, source: str, weights_hash: str, origin: str) -> None:
        super().__init__("ecapa", dim, source, weights_hash, origin)
        self.classifier = classifier
        self.mods = classifier.mods  # registers the modules as children (device moves, eval)

    def _embed(self, wav: torch.Tensor) -> torch.Tensor:
        self.classifier.device = str(wav.device)
        return self.classifier.encode_batch(wav).reshape(wav.shape[0], -1)


def load_local(path: str | Path, cache: Any, source: str = "local", origin: str | None = None, device: Any = "cpu") -> ECAPATeacher:
    """Load a speechbrain ECAPA model directory through ``EncoderClassifier.from_hparams``."""
    d = base.check_local_path("ecapa", str(path), "a speechbrain model directory with hyperparams.yaml")
    yaml_path = d / "hyperparams.yaml"
    if not yaml_path.is_file():
        raise base.TeacherLoadError(f"teacher 'ecapa': {d} has no hyperparams.yaml (a speechbrain model directory is expected)")
    from speechbrain.inference.speaker import EncoderClassifier

    text = yaml_path.read_text()
    overrides = {"pretrained_path": str(d)} if "pretrained_path" in text else {}
    savedir = Path(cache.root) / "teacher_hub" / "ecapa" / config_hash(str(d))
    try:
        clf = EncoderClassifier.from_hparams(
            source=str(d), savedir=str(savedir), overrides=overrides, run_opts={"device": str(device)}
        )
    except Exception as exc:
        raise base.TeacherLoadError(f"teacher 'ecapa': speechbrain could not load {d}: {exc}") from exc
    ckpt = d / "embedding_model.ckpt"
    h = config_hash(file_hash(yaml_path), file_hash(ckpt) if ckpt.exists() else file_hash(d))
    dim = int(clf.encode_batch(torch.zeros(1, 16000, device=str(device))).shape[-1])
    return ECAPATeacher(clf, dim, source, h, origin or f"local: {d} (sha256 {h})")


make_ecapa = base.register_teacher(
    "ecapa", pretrained=lambda cfg, cache, corpus, device: _from_hub(cfg.hub_id or DEFAULT_HUB_ID, cache, device),
    local=lambda cfg, cache, corpus, device: load_local(cfg.path, cache, device=device),
    trained=lambda cfg, cache, corpus, device: _trained(cfg, cache, corpus, device))


def _from_hub(hub_id: str, cache, device) -> ECAPATeacher:
    d = base.resolve_hf_snapshot(hub_id, "ecapa")
    t = load_local(d, cache, "pretrained", device=device)
    t.weights_origin = f"hub: {hub_id} ({d}, sha256 {t.weights_hash})"
    return t


def _trained(cfg, cache, corpus, device) -> ECAPATeacher:
    def build(model_dir: Path) -> dict:
        if cfg.train_size not in PRESETS:
            raise base.TeacherLoadError(f"teacher 'ecapa': train_size={cfg.train_size!r}; choices: {', '.join(PRESETS)}")
        arch = PRESETS[cfg.train_size]
        mods = build_modules(arch, 2)

        def feats(wav: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                f = mods["compute_features"](wav)
                return mods["mean_var_norm"](f, torch.ones(wav.shape[0]))

        def embed_train(wav: torch.Tensor) -> torch.Tensor:
            return mods["embedding_model"](feats(wav)).reshape(wav.shape[0], -1)

        def embed_eval(wav: torch.Tensor) -> torch.Tensor:
            mods["embedding_model"].eval()
            with torch.no_grad():
                return embed_train(wav)

        info = _train.train_speaker_encoder(
            "ecapa", mods["embedding_model"], embed_train, embed_eval, arch["lin_neurons"], corpus, cfg
        )
        from speechbrain.lobes.models.ECAPA_TDNN import Classifier

        mods["classifier"] = Classifier(input_size=arch["lin_neurons"], out_neurons=info["n_speakers"])
        mods["classifier"].weight.data.copy_(info.pop("head_weight"))
        save_speechbrain_dir(model_dir, arch, mods)
        return info

    return _train.trained_teacher("ecapa", cfg, cache, corpus, "speechbrain", build,
                                  lambda model_dir: load_local(model_dir, cache, "trained", device=device))
