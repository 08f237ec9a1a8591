"""Typed dataclass configs, YAML round-trip, dotted overrides, grid expansion and validation.

Every stage of the pipeline reads one *slice* of :class:`ExperimentConfig`; the hash of that
slice is the stage's cache key (see :mod:`bench.cache`).

Validation errors are :class:`ConfigError` and always name the dotted key, the bad value and
the allowed choices or range.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

READINGS = ("teacher", "student")  # ExperimentConfig.reading


class ConfigError(ValueError):
    """A config key or value is invalid; the message names key, value and what is allowed."""


# --------------------------------------------------------------------------- sections
@dataclass
class CorpusConfig:
    """Which speech corpus to use.

    Attributes:
        name: dataset plugin (``embedded`` builds the offline default corpus; ``librispeech``,
            ``voxceleb`` and ``manifest`` read a user's corpus from ``path``).
        size: preset of the embedded corpus (``smoke`` for tests, ``default``).
        path: root directory (librispeech/voxceleb) or CSV file (manifest).
        seed: seed of the corpus build and the speaker split.
        val_speakers: fraction of speakers in the validation split.
        test_speakers: fraction of speakers in the test split.
    """

    name: str = "embedded"
    size: str = "default"
    path: str = ""
    seed: int = 0
    val_speakers: float = 0.15
    test_speakers: float = 0.2
    # leave out unreadable, non-finite, too short or silent files and speakers with too few
    # usable utterances (one warning) instead of stopping with the list (bench/data/validate.py)
    skip_bad: bool = False
    # decoded audio kept in RAM per process, MiB (least recently used evicted first; 0: none kept).
    # The same crops come out at any value, so it is in no cache key (CORPUS_RUNTIME_FIELDS)
    audio_cache_mb: float = 512.0
    # how validation reads the files: "header" trusts each file's header (rate, frames; nothing
    # decoded), "decode" decodes every file once (also finds NaN, silent and damaged audio);
    # bench/data/validate.py. A clean corpus is the same corpus either way (CORPUS_RUNTIME_FIELDS)
    validate: str = "header"


# CorpusConfig fields that change how the corpus is read, never what it holds: left out of every
# cache key (bench.cache.key_slice skip) and, at their defaults, out of ExperimentConfig.to_dict
CORPUS_RUNTIME_FIELDS = ("audio_cache_mb", "validate")


@dataclass
class TestCorpusConfig(CorpusConfig):
    """Cross-corpus evaluation: the corpus whose speakers the test (or validation) mixtures come
    from. ``name: ""`` (the default) means ``corpus`` itself; any dataset name scores backbones
    and students trained on ``corpus`` on this corpus's speakers (``eval.split: all`` uses every
    one of its speakers, since none was seen in training)."""

    name: str = ""


@dataclass
class MixConfig:
    """How mixtures are made (target + interferers + noise, optional room).

    The defaults (one interfering talker at -5..5 dB SIR, so the embedding is the only cue to the
    target; stationary or recorded non-speech noise at -5..10 dB SNR) are sized so that the CPU
    default backbone learns to use the embedding within its budget. Babble is left out of the
    training mixtures (it is 3-6 more talkers) but is used for the ``noisy`` enrollment condition.
    """

    segment_s: float = 3.0
    enroll_s: float = 3.0
    n_interferers: list[int] = field(default_factory=lambda: [1])
    sir_db: list[float] = field(default_factory=lambda: [-5.0, 5.0])
    snr_db: list[float] = field(default_factory=lambda: [-5.0, 10.0])
    noise_types: list[str] = field(default_factory=lambda: ["white", "pink", "brown", "samples"])
    room_prob: float = 0.0
    # shares of target + noise, target + interferer(s), target + interferer(s) + noise; empty:
    # every mixture has both (n_interferers 0 then gives target + noise)
    shares: list[float] = field(default_factory=list)
    # the name of the operating level these values come from (``level: NAME`` in a config,
    # presets/levels/NAME.yaml); a label for the leaderboard, in keys only when not ``hard``
    level: str = "hard"

    # fields added after results were cached: in a key only when not at their default
    KEY_ADDED_LATER: ClassVar[tuple[str, ...]] = ("shares", "level")


@dataclass
class TeacherConfig:
    """Heavy teacher encoder. ``source`` says where its weights come from.

    Attributes:
        name: teacher plugin (``ge2e``, ``ecapa``, ``titanet``, ``wavlm``).
        source: ``pretrained`` (hub id or packaged weights), ``local`` (``path``), or
            ``trained`` (trained in the suite on the corpus train split).
        path: local checkpoint directory / file for ``source: local``.
        hub_id: hub id for ``source: pretrained`` (empty: the plugin's default).
        train_steps: steps of speaker-classification training for ``source: trained``.
        train_size: CPU-sized architecture preset for ``source: trained``.
        train_lr, train_batch_size, train_crop_s, train_weight_decay, train_grad_clip: the
            AM-softmax training of ``source: trained`` (AdamW; warm-up over a tenth of the steps,
            then cosine decay, :func:`bench.trainloop.warmup_cosine`; crops of ``train_crop_s``).
            ``train_lr`` 0: the plugin's own rate (2e-3; WavLM 1e-3).
        train_source: for ``source: trained``, ``zoo`` (default) loads the copy shipped in
            ``zoo/teachers/`` under the same training key when the cache lacks it (and trains here
            when the zoo has none); ``train`` always trains here.
    """

    name: str = "ge2e"
    source: str = "pretrained"
    path: str = ""
    hub_id: str = ""
    train_steps: int = 600
    train_size: str = "cpu"
    train_lr: float = 0.0
    train_batch_size: int = 32
    train_crop_s: float = 2.0
    train_weight_decay: float = 1e-4
    train_grad_clip: float = 5.0
    train_source: str = "zoo"


TEACHER_TRAIN_SOURCES = ("zoo", "train")

# Fields added after results were cached (bench.cache.key_slice: in a cache key only when not at
# their default, which is the value the code used before they existed, so existing keys stay valid)
TEACHER_ADDED_FIELDS = ("train_lr", "train_batch_size", "train_crop_s", "train_weight_decay", "train_grad_clip")


@dataclass
class StudentConfig:
    """Tiny student encoder that maps audio into the teacher's embedding space."""

    name: str = "tiny"
    max_params: int = 150_000
    n_mels: int = 40
    channels: int = 96
    hidden: int = 96


@dataclass
class DistillConfig:
    """Student distillation: loss, temperature and training budget."""

    loss: str = "contrastive"
    tau: float = 0.1
    symmetric: bool = True
    positives: str = "instance"
    inputs: list[str] = field(default_factory=lambda: ["clean", "noisy", "enhanced"])
    window_s: float = 1.0
    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-3
    val_every: int = 50
    patience: int = 3
    # optimiser (AdamW) and schedule: warm-up over min(warmup_max, steps / 10) steps, then cosine
    # decay to 5 % (bench.trainloop.warmup_cosine); gradients clipped to this global norm
    weight_decay: float = 1e-4
    warmup_max: int = 50
    grad_clip: float = 5.0
    # Enhanced inputs made under a drifted embedding (bench/distill.py:finish_inputs): each
    # `enhanced` item's enhancer embedding is moved toward another training speaker's by a weight
    # U(0, enh_emb_mix), as a refined embedding drifts toward an interferer; the student still
    # learns the clean target's embedding. 0 = off (the enrollment embedding as it is).
    enh_emb_mix: float = 0.0
    # Making the contrastive student coherent with the teacher's space (bench/losses.py,
    # bench/students/heads.py): `centre` trains InfoNCE on targets minus the teacher's training
    # mean and restores the mean on the output; `coord_weight` adds that weight times the MSE
    # coordinate term to InfoNCE (both read by the contrastive loss only); `align` fits a map from
    # the trained student's outputs to the teacher's space (any loss): none | affine | orthogonal.
    centre: bool = False
    coord_weight: float = 0.0
    align: str = "none"
    # Where a student comes from: `zoo` loads the one shipped in zoo/students/ under the same stage
    # key (checksum verified; trained here when there is none), `train` always trains it here. Not
    # in the student's key (a zoo student is the one trained under that key).
    source: str = "zoo"


DISTILL_SOURCES = ("zoo", "train")
DISTILL_ADDED_FIELDS = ("weight_decay", "warmup_max", "grad_clip", "enh_emb_mix", "centre", "coord_weight", "align")
DISTILL_ALIGNS = ("none", "affine", "orthogonal")


@dataclass
class PSEConfig:
    """Personalized speech-enhancement backbone and its training budget."""

    name: str = "pdfnet2"
    size: str = "cpu"
    personalized: bool = True
    injection: str = "join"
    # Budget of the zoo backbones (results/lab_notebook.md): 6000 steps of 16 x 1.5 s with a cosine schedule,
    # validation every 100 steps; patience 100 (never reached, so the whole schedule
    # runs) instead of 10, which had stopped the personalized backbone at 3700 steps on a noisy
    # 32-mixture validation: 80 fresh validation mixtures, SI-SDRi +4.20 vs +3.44 dB; 43 min on one
    # core. Too slow for the main job's 30 minutes: they ship in zoo/ (pse.source: zoo)
    train_steps: int = 6000
    batch_size: int = 16
    segment_s: float = 1.5
    lr: float = 2e-3
    # "cosine": linear warm-up over `warmup_steps`, then cosine decay to 5 % of `lr` at
    # `train_steps`; "constant": `lr` throughout
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    # FFT sizes of the magnitude loss (hop = n_fft / 4). [512] alone is the default: [512, 256,
    # 1024] costs about 0.16 s more per CPU step (0.27 s vs 0.11 s, batch 16 x 1.5 s), i.e.
    # 762-795 s vs 558-600 s per backbone; on the main grid static clean SI-SDRi was +2.79 with
    # three sizes vs +2.57 with one, CIs overlapping (results/lab_notebook.md)
    spec_ffts: list[int] = field(default_factory=lambda: [512])
    # weight of the spectral term against -SI-SDR (dB) in the training loss
    spec_weight: float = 10.0
    # Training seed (initialisation, mixtures drawn, embedding augmentation). 1, by the rule of
    # results/operating_point/PLAN_seeds.md (best of the recipe's runs on the validation speakers);
    # grids whose committed results used the earlier seed-0 zoo pair pin pse.seed: 0
    seed: int = 1
    val_every: int = 100
    patience: int = 100
    # gradients clipped to this global norm (Adam, no weight decay)
    grad_clip: float = 5.0
    # Training for a moving embedding (bench/pse/embaug.py). Each is the probability, per training
    # example, that its enrollment embedding is replaced: by the teacher embedding of a degraded
    # enrollment (noisy, reverberant, band-limited, competing talker, combined, short), by an
    # interpolation toward another training speaker's embedding (weight U(0, emb_mix_max)), or by
    # the zero vector (the model learns to fall back to non-personalized behaviour). 0 = off.
    # Defaults chosen by measurement (results/lab_notebook.md): mix 0.3 + drop 0.1 made personalization hold
    # on real voices (static - non-personalized on 240 real mixtures: -0.02 [-0.41, 0.34] without,
    # +0.31 [0.03, 0.59] with, 1000 steps each)
    emb_degraded: float = 0.0
    emb_mix: float = 0.3
    emb_mix_max: float = 0.5
    emb_drop: float = 0.1
    # Training through the refinement loop: with this probability per batch the model first
    # enhances the batch (no gradient), the teacher embeds that output, the embedding moves toward
    # it at a rate drawn per example from U(0, refine_alpha_max), and the loss is taken on a second
    # pass with the moved embedding. 0 = off. 0.5 by measurement: with it the teacher refining the
    # enhanced output went from hurting to helping on channel_change (results/lab_notebook.md)
    refine_train: float = 0.5
    refine_alpha_max: float = 0.5
    # Where the weights come from: ``zoo`` (a checkpoint shipped in ``zoo/`` whose stage key - the
    # training config, teacher, corpus content - equals this one's; trained here, with a warning,
    # when there is none), ``train`` (train here, cached) or ``local`` (a state dict or zoo-format
    # checkpoint at ``path``, evaluated without training).
    source: str = "zoo"
    path: str = ""
    # Attenuation limit in dB at inference (bench/pse/limit.py): the output gets
    # 10 ** (-atten_lim_db / 20) of the latency-aligned mixture added back, so no bin of a mask-based
    # backbone is attenuated by more than this; 0 = off. Not part of training (weights unchanged).
    # 26 chosen on 80 validation mixtures of the default backbone (results/lab_notebook.md): SI-SDRi +4.25
    # (off: +4.20), PESQ-WB +0.091 (+0.103), STOI +0.041 (+0.031) over the mixture; 20 dB and less
    # trade SI-SDR for STOI (10 dB: +3.19, STOI +0.042).
    atten_lim_db: float = 26.0


PSE_ADDED_FIELDS = ("grad_clip",)


# embedding update rules (bench/refine/base.py implements them) and gates of a refiner
REFINE_RULES = ("ema", "anchored", "reliability")
REFINE_GATES = ("none", "energy", "agreement")
# the baseline refiner (role ``baseline`` in bench/refine/refiners.py): the enrollment embedding,
# never updated; every gain is measured against it
BASELINE_REFINER = "static"


@dataclass
class RefineConfig:
    """On-the-fly refinement of the embedding while enhancing."""

    # the refiner (a name registered by bench.refine, checked when the config is validated); by
    # default the baseline
    name: str = BASELINE_REFINER
    alpha: float = 0.0
    block_s: float = 0.5
    gate: str = "none"
    gate_threshold: float = 0.0
    # seconds of past enhanced audio prepended to each block before encoding (0 = block only)
    context_s: float = 1.5
    # update rule, one of REFINE_RULES (implemented in bench/refine/base.py): a fixed rate alpha
    # (the first, the default), a running mean where the enrollment weighs n0 blocks, or a rate
    # alpha * w_k, w_k = clip((cos(s_k, e_0) - rel_lo) / (rel_hi - rel_lo), 0, 1); alpha = 0
    # leaves the embedding as it is for every rule
    rule: str = REFINE_RULES[0]
    n0: float = 4.0
    rel_lo: float = 0.3
    rel_hi: float = 0.8
    # how a student refiner encodes (bench/students/streaming.py): "window" re-embeds block +
    # context_s from scratch after every block; "streaming" keeps the student's state across
    # blocks and encodes each new block once (one pass over the audio; the embedding pools every
    # block so far, and context_s is not used)
    student_mode: str = "window"


EVAL_METRICS = ("si_sdr", "pesq", "stoi", "estoi", "dnsmos", "pdnsmos")
DEFAULT_EVAL_METRICS = ("si_sdr", "pesq", "stoi", "estoi")


def canonical_metrics(names: list[str] | tuple[str, ...]) -> list[str]:
    """``eval.metrics`` as the set it selects, in :data:`EVAL_METRICS` order (SI-SDR always), then
    the user (plugin) metrics in name order."""
    chosen = {"si_sdr", *names}
    return [m for m in EVAL_METRICS if m in chosen] + sorted(chosen - set(EVAL_METRICS))


def metric_choices() -> list[str]:
    """The built-in metrics, then those plugins registered (asked of the registry)."""
    from bench import registry

    return [*EVAL_METRICS, *sorted(n for n in registry.names("metric") if n not in EVAL_METRICS)]


@dataclass
class EvalConfig:
    """Evaluation set and statistics.

    ``split`` is ``test`` for leaderboards; sweeps tune on ``val``. ``n_test`` utterances are
    scored per condition of the chosen split (``n_val`` is the validation size used while
    training backbones and students).
    """

    split: str = "test"
    n_test: int = 30
    n_val: int = 20
    conditions: list[str] = field(
        default_factory=lambda: ["clean", "short", "noisy", "competing", "drift", "combined"]
    )
    test_s: float = 4.0
    # length of the long test streams of the stream conditions (voice_change, channel_change,
    # drift_long), seconds, and the level ranges of their interfering talker (SIR) and noise (SNR),
    # dB over the whole stream
    stream_s: float = 16.0
    n_stream: int = 30  # streams per stream condition (n_test counts the short mixtures)
    stream_sir_db: list[float] = field(default_factory=lambda: [-5.0, 5.0])
    stream_snr_db: list[float] = field(default_factory=lambda: [-5.0, 10.0])
    # level of the other voice in the `competing` and `combined` enrollments: target-to-competitor
    # ratio (dB) drawn uniformly from [lo, hi]; below 0 the other voice dominates the enrollment
    competing_sir_db: list[float] = field(default_factory=lambda: list(COMPETING_SIR_DB))
    n_bootstrap: int = 1000
    workers: int = 2
    pesq: bool = True
    # per-utterance metrics (EVAL_METRICS; SI-SDR(i) is always computed): pesq, stoi, estoi,
    # dnsmos (DNSMOS P.835 SIG/BAK/OVRL + P.808), pdnsmos (personalized DNSMOS P.835); the DNSMOS
    # models are off by default (seconds per utterance on a CPU); pesq: false drops PESQ whatever
    # this says. Enters the eval key only when its set differs from the default's
    # (bench.pipeline.keys), so results cached before it keep their keys
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_EVAL_METRICS))
    # PESQ / STOI / ESTOI / DNSMOS on the first `quality_n` items of each condition only (their
    # draw order is random), SI-SDR on all of them: a large significance test whose slow metrics
    # stay affordable. 0 = every item. In the eval key only when set (older keys hold).
    quality_n: int = 0
    # DNSMOS / pDNSMOS (1.3-3.3 CPU s per model and utterance, 14-35x PESQ) on the first
    # `mos_n` items of each condition only, whatever quality_n says; 0 = the quality_n subset.
    # In the eval key only when set (older keys hold).
    mos_n: int = 0
    # the teacher re-embeds the output (`out_cos`, per-utterance speaker evidence: a teacher pass
    # over every output, the costliest part of a large SI-SDR-only cell) on the first
    # `evidence_n` items of each condition only; 0 = every item. The embedding trajectory's
    # cosines (`traj_cos`) stay on every item. In the eval key only when set (older keys hold).
    evidence_n: int = 0


@dataclass
class TrainConfig:
    """How the training stages (backbone, students) run on the device at hand (``bench.runtime``).

    With the defaults they run as they always have: mixtures built in the training process, float32.
    None of these fields is part of a config slice; what they change in a result enters the stage
    cache keys through :func:`bench.runtime.key_extras` (nothing on a CPU with the defaults).

    Attributes:
        loader_workers: DataLoader worker processes that build the training mixtures off the
            training loop (``bench.data.steps``). 0: in the training process, from one sequential
            generator (the cached results). >= 1: each batch from a generator seeded by
            (seed, step), so 1, 2 or 8 workers give the same batches (another stream than 0).
        amp: autocast the forward passes of training (CUDA only; a no-op with a note on a CPU).
        amp_dtype: ``bfloat16`` (no loss scaling needed) or ``float16`` (with a GradScaler).
    """

    loader_workers: int = 0
    amp: bool = False
    amp_dtype: str = "bfloat16"


@dataclass
class ExperimentConfig:
    """One cell of a grid: everything a run needs."""

    name: str = "default"
    seed: int = 0
    device: str = "auto"
    cache_dir: str = ""
    # How the distilled student is used (docs/systems.md, "The two readings"): `teacher` (the
    # backbone is conditioned on the teacher's embedding and the student's vector is mixed into
    # it) or `student` (the backbone is trained on the student's own embedding of the enrollment,
    # and static, shrink, the ceilings and the student's refinement all run in that space; the
    # teacher is needed at training time only).
    reading: str = "teacher"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    test_corpus: TestCorpusConfig = field(default_factory=TestCorpusConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    pse: PSEConfig = field(default_factory=PSEConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        # `train` at its defaults is left out, so the dict (and every hash of it: the leaderboard's
        # config_hash, sweep study names) is what it was before the section existed
        if self.train == TrainConfig():
            del out["train"]
        if self.reading == "teacher":  # likewise the default reading (it existed before this field)
            del out["reading"]
        if self.distill.source == "zoo":  # and where a student comes from, at its default
            del out["distill"]["source"]
        if self.teacher.train_source == "zoo":  # and where a trained teacher comes from
            del out["teacher"]["train_source"]
        for k in MixConfig.KEY_ADDED_LATER:  # the mix's level and shares at the hard defaults
            if out["mix"][k] == getattr(MixConfig(), k):
                del out["mix"][k]
        for section, default in (("corpus", CorpusConfig()), ("test_corpus", TestCorpusConfig())):
            for k in CORPUS_RUNTIME_FIELDS:  # likewise a read-side knob at its default
                if out[section][k] == getattr(default, k):
                    del out[section][k]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ExperimentConfig:
        cfg = _build(cls, expand_preset(data or {}), prefix="")
        validate(cfg)
        return cfg

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> ExperimentConfig:
        return cls.from_dict(yaml.safe_load(text))


# --------------------------------------------------------------------------- building
def _resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Coerce a YAML value to the field's type, or raise ConfigError naming the key."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {hint.__name__} fields, got {value!r}")
        return _build(hint, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint in _NUMBERS:
        what, accepted = _NUMBERS[hint]
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ConfigError(f"{key}: expected {what}, got {value!r}")
        try:
            return hint(value)
        except ValueError:
            raise ConfigError(f"{key}: expected {what}, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


# numeric field types: how an error names them, and the YAML / command-line values they accept
_NUMBERS: dict[type, tuple[str, tuple[type, ...]]] = {int: ("an integer", (int, str)),
                                                      float: ("a number", (int, float, str))}


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _resolved_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r}; valid keys under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)


# --------------------------------------------------------------------------- validation
def _choice(key: str, value: Any, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not allowed; choices: {', '.join(map(str, choices))}")


def _range(key: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        left = "(" if lo_open else "["
        raise ConfigError(f"{key}={value!r} is out of range {left}{lo}, {hi}]")


CONDITIONS = (
    "clean",
    "short",
    "noisy",
    "reverb",
    "bandlimited",
    "competing",
    "drift",
    "combined",
    # long streams in the paper's regime (bench/data/streams.py): the target's voice changes
    "voice_change",
    "channel_change",
    "drift_long",
)
STREAM_CONDITIONS = ("voice_change", "channel_change", "drift_long")
# conditions that degrade the enrollment of a short test mixture (bench.data.conditions)
ENROLL_CONDITIONS = tuple(c for c in CONDITIONS if c not in STREAM_CONDITIONS)
# conditions whose enrollment carries another voice, and that voice's default level (dB
# target-to-competitor ratio, drawn uniformly; EvalConfig.competing_sir_db)
COMPETING_CONDITIONS = ("competing", "combined")
COMPETING_SIR_DB = (-5.0, 5.0)
NOISE_TYPES = ("white", "pink", "brown", "babble", "samples")
DISTILL_INPUTS = ("clean", "noisy", "enhanced")
PSE_SOURCES = ("train", "zoo", "local")
STUDENT_MODES = ("window", "streaming")


def condition_choices() -> list[str]:
    """The built-in conditions, then those plugins registered (asked of the registry)."""
    from bench import registry

    return [*CONDITIONS, *sorted(n for n in registry.names("condition") if n not in CONDITIONS)]


def validate(cfg: ExperimentConfig) -> None:
    """Check every value; raise :class:`ConfigError` naming the key, value and allowed set."""
    _validate_data(cfg)
    _validate_models(cfg)
    _validate_pse(cfg)
    _validate_refine(cfg)
    _validate_eval(cfg)


def _validate_data(cfg: ExperimentConfig) -> None:
    """Check ``device``, ``corpus`` and ``mix``."""
    from bench import registry

    _choice("device", cfg.device, ("auto", "cpu", "cuda"))
    _choice("reading", cfg.reading, READINGS)
    _choice("corpus.name", cfg.corpus.name, registry.names("dataset"))
    _choice("corpus.size", cfg.corpus.size, ("smoke", "default", "large"))
    _range("corpus.val_speakers", cfg.corpus.val_speakers, 0.0, 0.5, lo_open=True)
    _range("corpus.test_speakers", cfg.corpus.test_speakers, 0.0, 0.5, lo_open=True)
    _range("corpus.audio_cache_mb", cfg.corpus.audio_cache_mb, 0.0, float("inf"))
    _range("mix.segment_s", cfg.mix.segment_s, 0.25, 60.0)
    _range("mix.enroll_s", cfg.mix.enroll_s, 0.25, 60.0)
    for i, n in enumerate(cfg.mix.n_interferers):
        _range(f"mix.n_interferers[{i}]", n, 0, 3)
    for key in ("sir_db", "snr_db"):
        rng = getattr(cfg.mix, key)
        if len(rng) != 2 or rng[0] > rng[1]:
            raise ConfigError(f"mix.{key}={rng!r} must be [low, high] with low <= high")
    for i, n in enumerate(cfg.mix.noise_types):
        _choice(f"mix.noise_types[{i}]", n, NOISE_TYPES)
    _range("mix.room_prob", cfg.mix.room_prob, 0.0, 1.0)
    shares = cfg.mix.shares
    if shares:
        if len(shares) != 3 or min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-6:
            raise ConfigError(f"mix.shares={shares!r} must be three non-negative shares summing to 1: "
                              "[target+noise, target+interferer, target+interferer+noise]")
        if shares[1] + shares[2] > 0 and (not cfg.mix.n_interferers or 0 in cfg.mix.n_interferers):
            raise ConfigError(f"mix.n_interferers={cfg.mix.n_interferers!r} must list only counts >= 1 "
                              "when mix.shares gives mixtures with an interferer")
        if shares[0] + shares[2] > 0 and not cfg.mix.noise_types:
            raise ConfigError("mix.noise_types=[] cannot give the noise that mix.shares asks for")
    _choice("mix.level", cfg.mix.level, level_names())


def _validate_models(cfg: ExperimentConfig) -> None:
    """Check ``teacher``, ``student`` and ``distill``."""
    from bench import registry

    _choice("teacher.name", cfg.teacher.name, registry.names("teacher"))
    _choice("teacher.source", cfg.teacher.source, ("pretrained", "local", "trained"))
    if cfg.teacher.source == "local" and not cfg.teacher.path:
        raise ConfigError("teacher.path is empty but teacher.source='local' needs a checkpoint path")
    _choice("teacher.train_source", cfg.teacher.train_source, TEACHER_TRAIN_SOURCES)
    _range("teacher.train_steps", cfg.teacher.train_steps, 1, 10**7)
    _range("teacher.train_lr", cfg.teacher.train_lr, 0.0, 1.0)
    _range("teacher.train_batch_size", cfg.teacher.train_batch_size, 2, 4096)
    _range("teacher.train_crop_s", cfg.teacher.train_crop_s, 0.25, 30.0)
    _range("teacher.train_weight_decay", cfg.teacher.train_weight_decay, 0.0, 1.0)
    _range("teacher.train_grad_clip", cfg.teacher.train_grad_clip, 0.0, 1e6, lo_open=True)
    _choice("student.name", cfg.student.name, registry.names("student"))
    _range("student.max_params", cfg.student.max_params, 1000, 10**9)
    _choice("distill.loss", cfg.distill.loss, registry.names("loss"))
    _range("distill.tau", cfg.distill.tau, 0.0, 10.0, lo_open=True)
    _choice("distill.positives", cfg.distill.positives, ("instance", "speaker"))
    if not cfg.distill.inputs:
        raise ConfigError(f"distill.inputs is empty; choose from: {', '.join(DISTILL_INPUTS)}")
    for i, n in enumerate(cfg.distill.inputs):
        _choice(f"distill.inputs[{i}]", n, DISTILL_INPUTS)
    _range("distill.window_s", cfg.distill.window_s, 0.1, 30.0)
    _range("distill.steps", cfg.distill.steps, 1, 10**7)
    _range("distill.batch_size", cfg.distill.batch_size, 2, 4096)
    _range("distill.lr", cfg.distill.lr, 0.0, 1.0, lo_open=True)
    _range("distill.weight_decay", cfg.distill.weight_decay, 0.0, 1.0)
    _range("distill.warmup_max", cfg.distill.warmup_max, 1, 10**7)
    _range("distill.grad_clip", cfg.distill.grad_clip, 0.0, 1e6, lo_open=True)
    _range("distill.enh_emb_mix", cfg.distill.enh_emb_mix, 0.0, 1.0)
    _range("distill.coord_weight", cfg.distill.coord_weight, 0.0, 1e3)
    _choice("distill.align", cfg.distill.align, DISTILL_ALIGNS)
    _choice("distill.source", cfg.distill.source, DISTILL_SOURCES)


def _validate_pse(cfg: ExperimentConfig) -> None:
    """Check ``pse`` (the backbone factory may declare its sizes and injections)."""
    from bench import registry

    _choice("pse.name", cfg.pse.name, registry.names("pse"))
    # a backbone factory may declare its size presets and injection points (pdfnet2 does)
    factory = registry.get("pse", cfg.pse.name)
    if getattr(factory, "sizes", None):
        _choice("pse.size", cfg.pse.size, tuple(factory.sizes))
    if getattr(factory, "injections", None):
        _choice("pse.injection", cfg.pse.injection, tuple(factory.injections))
    _range("pse.train_steps", cfg.pse.train_steps, 1, 10**7)
    _range("pse.batch_size", cfg.pse.batch_size, 1, 4096)
    _range("pse.lr", cfg.pse.lr, 0.0, 1.0, lo_open=True)
    _range("pse.grad_clip", cfg.pse.grad_clip, 0.0, 1e6, lo_open=True)
    _range("pse.atten_lim_db", cfg.pse.atten_lim_db, 0.0, 200.0)
    _range("pse.spec_weight", cfg.pse.spec_weight, 0.0, 1e4)
    _choice("pse.lr_schedule", cfg.pse.lr_schedule, ("constant", "cosine"))
    for k in ("emb_degraded", "emb_mix", "emb_mix_max", "emb_drop", "refine_train", "refine_alpha_max"):
        _range(f"pse.{k}", getattr(cfg.pse, k), 0.0, 1.0)
    _choice("pse.source", cfg.pse.source, PSE_SOURCES)
    if cfg.pse.source == "local" and not cfg.pse.path:
        raise ConfigError("pse.path is empty but pse.source='local' needs a checkpoint path")
    _range("pse.warmup_steps", cfg.pse.warmup_steps, 0, 10**7)
    if not cfg.pse.spec_ffts or any(int(n) < 16 or int(n) % 4 for n in cfg.pse.spec_ffts):
        raise ConfigError(
            f"pse.spec_ffts={cfg.pse.spec_ffts!r} is not allowed; give one or more FFT sizes, "
            "each >= 16 and a multiple of 4"
        )


def _validate_refine(cfg: ExperimentConfig) -> None:
    """Check ``refine``."""
    from bench import registry

    _choice("refine.name", cfg.refine.name, registry.names("refiner"))
    _range("refine.alpha", cfg.refine.alpha, 0.0, 1.0)
    _range("refine.block_s", cfg.refine.block_s, 0.05, 10.0)
    _choice("refine.gate", cfg.refine.gate, REFINE_GATES)
    _choice("refine.rule", cfg.refine.rule, REFINE_RULES)
    _range("refine.n0", cfg.refine.n0, 0.0, 1e4, lo_open=True)
    _range("refine.rel_lo", cfg.refine.rel_lo, -1.0, 1.0)
    _range("refine.rel_hi", cfg.refine.rel_hi, -1.0, 1.0)
    if cfg.refine.rule == "reliability" and not cfg.refine.rel_hi > cfg.refine.rel_lo:
        raise ConfigError(f"refine.rel_hi={cfg.refine.rel_hi!r} must be above refine.rel_lo={cfg.refine.rel_lo!r}")
    _range("refine.context_s", cfg.refine.context_s, 0.0, 30.0)
    _choice("refine.student_mode", cfg.refine.student_mode, STUDENT_MODES)


def _validate_eval(cfg: ExperimentConfig) -> None:
    """Check ``test_corpus``, ``eval`` and ``train``."""
    from bench import registry

    if cfg.test_corpus.name:
        _choice("test_corpus.name", cfg.test_corpus.name, registry.names("dataset"))
        _choice("test_corpus.size", cfg.test_corpus.size, ("smoke", "default", "large"))
        _range("test_corpus.audio_cache_mb", cfg.test_corpus.audio_cache_mb, 0.0, float("inf"))
    _choice("eval.split", cfg.eval.split, ("val", "test", "all"))
    if cfg.eval.split == "all" and not cfg.test_corpus.name:
        raise ConfigError("eval.split='all' scores every speaker of the test corpus, so it needs a corpus "
                          "that trained nothing: set test_corpus.name (and test_corpus.path)")
    _range("eval.n_test", cfg.eval.n_test, 1, 10**6)
    _range("eval.quality_n", cfg.eval.quality_n, 0, 10**6)
    _range("eval.mos_n", cfg.eval.mos_n, 0, 10**6)
    _range("eval.evidence_n", cfg.eval.evidence_n, 0, 10**6)
    _range("eval.n_stream", cfg.eval.n_stream, 1, 10**6)
    _range("eval.n_val", cfg.eval.n_val, 1, 10**6)
    if not cfg.eval.conditions:
        raise ConfigError(f"eval.conditions is empty; choose from: {', '.join(condition_choices())}")
    for i, c in enumerate(cfg.eval.conditions):
        _choice(f"eval.conditions[{i}]", c, condition_choices())
    _range("eval.test_s", cfg.eval.test_s, 0.5, 60.0)
    _range("eval.stream_s", cfg.eval.stream_s, 6.0, 120.0)
    for key in ("stream_sir_db", "stream_snr_db"):
        rng = getattr(cfg.eval, key)
        if len(rng) != 2 or not -30.0 <= float(rng[0]) <= float(rng[1]) <= 60.0:
            raise ConfigError(f"eval.{key}={rng!r} is not allowed; give [lo, hi] with -30 <= lo <= hi <= 60 (dB)")
    c_sir = cfg.eval.competing_sir_db
    if len(c_sir) != 2 or not -30.0 <= float(c_sir[0]) <= float(c_sir[1]) <= 30.0:
        raise ConfigError(
            f"eval.competing_sir_db={c_sir!r} is not allowed; give [lo, hi] with -30 <= lo <= hi <= 30 (dB)"
        )
    for i, m in enumerate(cfg.eval.metrics):
        _choice(f"eval.metrics[{i}]", m, metric_choices())
    _range("eval.workers", cfg.eval.workers, 1, 256)
    _range("eval.n_bootstrap", cfg.eval.n_bootstrap, 1, 10**7)
    _range("train.loader_workers", cfg.train.loader_workers, 0, 256)
    _choice("train.amp_dtype", cfg.train.amp_dtype, ("bfloat16", "float16"))


# --------------------------------------------------------------------------- overrides
def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``key='a.b'`` (creating mappings as needed)."""
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {key!r}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``a.b=value`` (value read as YAML, so ``0.1``, ``true``, ``[1, 2]`` work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = load_yaml(raw, f"override {text!r}") if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key, value


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``extra`` wins."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- size presets
PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


def preset_names() -> list[str]:
    """The size presets in ``presets/`` (``cpu``: the defaults; ``paper``: GPU-sized)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def level_names() -> list[str]:
    """The operating levels in ``presets/levels/`` (``hard``: the defaults; ``field``: a noisy
    input near PESQ-WB 2, as the field's test sets)."""
    return sorted(p.stem for p in (PRESETS_DIR / "levels").glob("*.yaml"))


def _expand_one(data: dict[str, Any], key: str, folder: Path, choices: list[str]) -> dict[str, Any]:
    rest = {k: v for k, v in data.items() if k != key}
    name = data[key]
    f = folder / f"{name}.yaml"
    if not isinstance(name, str) or not f.is_file():
        raise ConfigError(f"{key}={name!r} is not allowed; choices: {', '.join(choices)}")
    loaded = yaml.safe_load(f.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{key} file {str(f)!r} must be a mapping of config sections")
    return deep_merge(loaded, rest)


def expand_preset(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its ``preset: NAME`` key replaced by the values of ``presets/NAME.yaml``
    and its ``level: NAME`` key by those of ``presets/levels/NAME.yaml`` (which also sets
    ``mix.level``), underneath: every value ``data`` sets itself (a grid's base, its axes,
    ``--set``) wins."""
    if not isinstance(data, dict):
        return data
    if "level" in data:
        name = data["level"]
        data = _expand_one(data, "level", PRESETS_DIR / "levels", level_names())
        data = deep_merge(data, {"mix": {"level": name}})
    if "preset" in data:
        data = _expand_one(data, "preset", PRESETS_DIR, preset_names())
    return data


# --------------------------------------------------------------------------- bounded YAML
# What one YAML document may expand to, an alias counted as a copy of what it names: nodes plus
# the characters of its scalars. A grid file is a few thousand; an alias bomb ("billion laughs")
# is billions, and would be expanded by the first deep copy of the grid's base.
MAX_YAML_SIZE = 10_000_000


def load_yaml(text: str, what: str, limit: int = MAX_YAML_SIZE) -> Any:
    """``yaml.safe_load(text)``, refused (ConfigError naming ``what``) when the document is
    recursive or expands to more than ``limit`` nodes and scalar characters."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, what, limit)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expanded_size(root: yaml.Node, what: str, limit: int) -> None:
    """Raise ConfigError when ``root`` expands (aliases as copies) past ``limit`` or refers to
    itself; shared nodes are measured once, so this is linear in the document's size."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            size[key] = 1 + own + sum(size[id(c)] for c in _yaml_children(node))
            if size[key] > limit:
                raise ConfigError(f"{what} expands to more than {limit:,} YAML nodes and characters (aliases "
                                  "repeating aliases?): refused; write the values out")
            continue
        if key in size:
            continue
        if key in on_path:
            raise ConfigError(f"{what} holds a YAML alias that refers to itself: refused")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _yaml_children(node))


# --------------------------------------------------------------------------- grids
# A grid's name names its results folder (results/<name>): no path separators, no leading dot.
GRID_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")


def grid_name(value: Any, source: str = "grid key 'name'") -> str:
    """``value`` as a grid name, or ConfigError naming it when it is not a plain name."""
    text = str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
    if text is None or not GRID_NAME.fullmatch(text):
        raise ConfigError(f"{source} {reprlib.repr(value)} is not a plain name: use letters, digits and _ . + - "
                          "(at most 100, no path separator, not starting with a dot); it names the results "
                          "folder results/<name>")
    return text


@dataclass
class Cell:
    """One expanded grid cell: its config and the axis values that distinguish it."""

    config: ExperimentConfig
    axes: dict[str, Any]


@dataclass
class Grid:
    """A grid file.

    YAML layout::

        name: losses
        base: {teacher: {name: ge2e}, corpus: {size: default}}   # fixed values (lists are values)
        grid: {seed: [0, 1]}                # dotted key -> list of values; cartesian product
        systems:                            # union of sub-grids, each crossed with ``grid``
          - {refine.name: static}
          - {refine.name: ema, distill.loss: [contrastive, mse, cosine], refine.alpha: [0.1, 0.3]}

    In ``grid`` and ``systems`` a list value is an axis; to sweep a list-typed field give a
    list of lists.
    """

    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    systems: list[dict[str, Any]]
    # the roles of the cells added to every personalized cell when the grid lacks them
    # (bench.grid.with_baselines): `implicit: [baseline, control]` leaves out the ceilings and
    # the fixed references, for a large test that only needs its systems, static and shrink
    implicit: list[str] = field(default_factory=lambda: list(IMPLICIT_ROLES))

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> Grid:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"grid file {str(path)!r} does not exist")
        what = f"grid file {str(path)!r}"
        try:
            data = load_yaml(path.read_text(encoding="utf-8"), what)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{what} is not valid YAML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not data or (isinstance(data, dict) and not {"base", "grid", "systems"} & set(data)):
            raise ConfigError(f"{what} defines no cells: give base, grid or systems (see ablations/smoke.yaml)")
        if isinstance(data, dict) and data.get("name") in (None, ""):
            grid_name(path.stem, source=f"the grid's name (its file name, as {what} has no name:)")
        return cls.from_dict(
            data,
            default_name=path.stem,
            overrides=overrides,
            baselines_dir=path.resolve().parent.parent / "baselines",
        )

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        default_name: str = "grid",
        overrides: list[str] | None = None,
        baselines_dir: Path | None = None,
    ) -> Grid:
        allowed = {"name", "base", "grid", "systems", "implicit"}
        if not isinstance(data, dict):
            raise ConfigError(f"a grid file must be a mapping with keys {sorted(allowed)}")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown grid key {unknown[0]!r}; valid keys: {', '.join(sorted(allowed))}"
            )
        base = dict(data.get("base") or {})
        for ov in overrides or []:
            k, v = parse_override(ov)
            set_dotted(base, k, v)
        grid = {k: _as_axis(k, v) for k, v in (data.get("grid") or {}).items()}
        systems = data.get("systems", [{}])
        systems = [] if systems is None else systems
        if not isinstance(systems, list) or not all(isinstance(s, dict) for s in systems):
            raise ConfigError("grid key 'systems' must be a list of mappings of dotted keys")
        if not systems:
            raise ConfigError("grid key 'systems' is empty: list at least one system, e.g. "
                              "'- {refine.name: static}' (or leave the key out for the base config alone)")
        systems = [_expand_baseline(s, baselines_dir) for s in systems]
        name = grid_name(data["name"]) if data.get("name") not in (None, "") else grid_name(default_name)
        return cls(name=name, base=base, grid=grid, systems=systems,
                   implicit=_implicit_roles(data.get("implicit", list(IMPLICIT_ROLES))))

    def cells(self) -> list[Cell]:
        """Expand into validated cells (duplicates removed, order kept)."""
        out: list[Cell] = []
        seen: set[str] = set()
        for system in self.systems:
            axes = dict(self.grid)
            axes.update({k: _as_axis(k, v) for k, v in system.items()})
            keys = list(axes)
            for combo in itertools.product(*(axes[k] for k in keys)):
                values = dict(zip(keys, combo, strict=True))
                data = _deep_copy(self.base)
                data.setdefault("name", self.name)
                for k, v in values.items():
                    set_dotted(data, k, v)
                cfg = ExperimentConfig.from_dict(data)
                key = yaml.safe_dump(cfg.to_dict(), sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                out.append(Cell(config=cfg, axes=values))
        return out


BASELINES_DIR = Path(__file__).resolve().parents[1] / "baselines"
# roles of the cells bench.grid.with_baselines adds (a grid's `implicit` key picks among them)
IMPLICIT_ROLES = ("baseline", "reference", "control", "ceiling")


def _implicit_roles(value: Any) -> list[str]:
    """The grid key ``implicit``: a list of roles among :data:`IMPLICIT_ROLES`; ``baseline``
    is required (every comparison is paired with static)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"grid key 'implicit'={value!r} is not allowed; give a list of roles among "
                          f"{', '.join(IMPLICIT_ROLES)}")
    for v in value:
        if v not in IMPLICIT_ROLES:
            raise ConfigError(f"grid key 'implicit' has {v!r}; choices: {', '.join(IMPLICIT_ROLES)}")
    if "baseline" not in value:
        raise ConfigError(f"grid key 'implicit'={value!r} lacks 'baseline': every system is compared with "
                          "its static baseline")
    return list(dict.fromkeys(value))


def _expand_baseline(system: dict[str, Any], baselines_dir: Path | None) -> dict[str, Any]:
    """Replace ``{baseline: NAME, ...}`` by the dotted keys of ``baselines/NAME.yaml`` (+ extras)."""
    if "baseline" not in system:
        return system
    name = system["baseline"]
    dirs = [d for d in (baselines_dir, BASELINES_DIR, Path.cwd() / "baselines") if d is not None]
    for d in dirs:
        f = d / f"{name}.yaml"
        if f.is_file():
            loaded = load_yaml(f.read_text(), f"baseline file {str(f)!r}") or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"baseline file {str(f)!r} must be a mapping of dotted keys")
            extra = {k: v for k, v in system.items() if k != "baseline"}
            return {**loaded, **extra}
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"unknown baseline {name!r}; baselines: {', '.join(known) or '(none found)'}")


def _as_axis(key: str, value: Any) -> list[Any]:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"grid axis {key!r} is an empty list")
        return value
    return [value]


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a single config from YAML (or defaults) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        data = load_yaml(p.read_text(), f"config file {str(p)!r}") or {}
    for ov in overrides or []:
        k, v = parse_override(ov)
        set_dotted(data, k, v)
    return ExperimentConfig.from_dict(data)
