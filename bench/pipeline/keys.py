"""What each evaluation stage depends on: config slices and cache keys.

Nothing here loads or computes anything; the stage providers (:mod:`bench.pipeline.stages`) and
the cell evaluation (:mod:`bench.pipeline.cell`) key their caches with these functions, and
``bench.run`` / ``bench.distributed`` use :func:`eval_slice` to name a cell's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.cache import config_hash, key_slice
from bench.config import (
    COMPETING_CONDITIONS,
    CONDITIONS,
    CORPUS_RUNTIME_FIELDS,
    DEFAULT_EVAL_METRICS,
    STREAM_CONDITIONS,
    TEACHER_ADDED_FIELDS,
    EvalConfig,
    ExperimentConfig,
    MixConfig,
    canonical_metrics,
)
from bench.losses import distill_slice
from bench.readings import student_reading
from bench.refine import updates_embedding, uses_student

# The evaluation mixtures do not depend on the cell's seed: every system and seed is scored on
# the same utterances, so differences are paired.
EVAL_SEED_OFFSET = 1000
# Bump a stage's version when its code changes what a given config produces (its cache key).
# eval 3: rtf is one stream's, per-block latency added; 4: SI-SDR with numpy's BLAS on one thread
STAGE_VERSION = {"evalset": 2, "eval": 4}


def draw_split(split: str) -> str | None:
    """The corpus split ``eval.split`` names (None for ``all``: every speaker)."""
    return None if split == "all" else split


def eval_split(cfg: ExperimentConfig) -> str | None:
    """The split the eval sets are drawn from (None: every speaker of the test corpus)."""
    return draw_split(cfg.eval.split)


# key element of stream sets, cells and mixture scores whose streams follow ``mix.shares``
STREAM_SHARES = "streams-follow-shares"


def n_items(cfg: ExperimentConfig, condition: str) -> int:
    """Test items of a condition: ``eval.n_stream`` streams or ``eval.n_test`` short mixtures."""
    return cfg.eval.n_stream if condition in STREAM_CONDITIONS else cfg.eval.n_test


@dataclass(frozen=True)
class EvalSetSpec:
    """Everything one condition's fixed test mixtures depend on, besides the corpus they are cut
    from: the slice of a cell's config the eval-set stage takes."""

    condition: str
    mix: MixConfig
    n: int
    test_s: float
    seed: int
    split: str  # ``eval.split`` as configured ("all" = every speaker)
    competing_sir_db: tuple[float, float]
    stream_s: float
    stream_sir_snr_db: tuple[float, float]

    @classmethod
    def of(cls, cfg: ExperimentConfig, condition: str) -> EvalSetSpec:
        e = cfg.eval
        return cls(condition, cfg.mix, n_items(cfg, condition), e.test_s, cfg.corpus.seed + EVAL_SEED_OFFSET,
                   e.split, tuple(e.competing_sir_db), e.stream_s, (e.stream_sir_db, e.stream_snr_db))

    @property
    def draw_split(self) -> str | None:
        """The split the mixtures are drawn from (None: every speaker)."""
        return draw_split(self.split)

    def key(self, corpus_key: str) -> str:
        """Content key of the mixtures cut from the corpus whose content key is ``corpus_key``;
        the competitor's level and the stream settings enter only where the condition uses them."""
        extra: list[Any] = [list(self.competing_sir_db)] if self.condition in COMPETING_CONDITIONS else []
        if self.condition in STREAM_CONDITIONS:
            extra.append(["stream", self.stream_s, *self.stream_sir_snr_db])
            if self.mix.shares:  # the streams follow the shares (absent without, so older keys hold)
                extra.append(STREAM_SHARES)
        if self.condition not in CONDITIONS:  # a user condition: its declared version
            from bench.data.condition_spec import spec

            extra.append(["plugin", spec(self.condition).version])
        return config_hash(STAGE_VERSION["evalset"], corpus_key, self.mix, self.n, self.test_s, self.condition,
                           self.seed, self.split, *extra)


def streams_follow_shares(cfg: ExperimentConfig) -> bool:
    """Whether a cell's test streams draw what they hold by ``mix.shares`` (a level with shares and
    a stream condition): a key element then, since streams held both before they followed them."""
    return bool(cfg.mix.shares) and any(c in STREAM_CONDITIONS for c in cfg.eval.conditions)


def metrics_slice(e: EvalConfig) -> list[Any]:
    """``eval.metrics`` for a cache key: ``[]`` when it selects the default set (the metrics scored
    before it existed, so older keys hold), else ``["metrics", <the selected set>]``."""
    chosen = canonical_metrics(e.metrics)
    if chosen == canonical_metrics(DEFAULT_EVAL_METRICS):
        return []
    from bench.metrics.spec import user_metrics

    versions = {m.name: m.version for m in user_metrics(chosen)}  # a user metric's version, when there is one
    return ["metrics", chosen, *([versions] if versions else [])]


def eval_slice(cfg: ExperimentConfig) -> dict[str, Any]:
    """The part of a cell's config its evaluation depends on (its cache key)."""
    from bench.pse.train import training_slice

    s: dict[str, Any] = {
        "v": STAGE_VERSION["eval"],
        "corpus": key_slice(cfg.corpus, skip=CORPUS_RUNTIME_FIELDS),
        "test_corpus": key_slice(cfg.test_corpus, skip=CORPUS_RUNTIME_FIELDS) if cfg.test_corpus.name else "",
        "mix": cfg.mix,
        "eval": {k: v for k, v in vars(cfg.eval).items() if k not in ("workers", "metrics", "quality_n", "mos_n", "evidence_n")},
        # where a trained teacher comes from is left out: the cell key holds the weights' identity
        "teacher": key_slice(cfg.teacher, TEACHER_ADDED_FIELDS, skip=("train_source",)),
        "pse": training_slice(cfg.pse),
        "pse_source": [cfg.pse.source, cfg.pse.path],
    }
    ms = metrics_slice(cfg.eval)
    if ms:  # absent at the default set so that older keys hold
        s["eval"]["metrics"] = ms[1]
        if len(ms) > 2:  # and the user metrics' versions only where there are some
            s["eval"]["metric_versions"] = ms[2]
    if cfg.eval.quality_n:  # likewise
        s["eval"]["quality_n"] = cfg.eval.quality_n
    if cfg.eval.mos_n:  # likewise
        s["eval"]["mos_n"] = cfg.eval.mos_n
    if cfg.eval.evidence_n:  # likewise
        s["eval"]["evidence_n"] = cfg.eval.evidence_n
    if streams_follow_shares(cfg):
        s["stream_shares"] = STREAM_SHARES
    if cfg.pse.atten_lim_db:  # inference-time; absent at 0 so that older keys hold
        s["pse_atten_lim_db"] = cfg.pse.atten_lim_db
    if cfg.pse.personalized:
        s["refine"] = refine_slice(cfg) if updates_embedding(cfg) else {"name": cfg.refine.name}
    if uses_student(cfg) or student_reading(cfg):
        s["student"] = cfg.student
        s["distill"] = distill_slice(cfg.distill)
        s["seed"] = cfg.seed
    if student_reading(cfg):  # absent in the teacher reading so that older keys hold
        s["reading"] = "student"
    return s


def mixture_key(cfg: ExperimentConfig, corpus_key: str) -> str:
    """Key of the unprocessed mixtures' metrics on every condition of a cell's eval sets."""
    e = cfg.eval
    return config_hash("mixture", STAGE_VERSION["eval"], corpus_key, cfg.mix, e.n_test, e.n_stream, e.test_s,
                       e.stream_s, e.stream_sir_db, e.stream_snr_db, e.split, e.conditions, e.pesq,
                       e.competing_sir_db, *metrics_slice(e), *(["quality_n", e.quality_n] if e.quality_n else []),
                       *(["mos_n", e.mos_n] if e.mos_n else []),
                       *([STREAM_SHARES] if streams_follow_shares(cfg) else []))


def backbone_key(cfg: ExperimentConfig, corpus: Any, teacher: Any, device: Any) -> str:
    """The backbone as it is evaluated: its training stage key (``bench.pse.train.stage_key``) plus
    what ``pse.atten_lim_db`` adds at inference ("" when off, so older keys hold)."""
    from bench.pse.train import stage_key

    lim = cfg.pse.atten_lim_db
    return stage_key(cfg, corpus, teacher, device) + (f"+lim{lim:g}dB" if lim else "")


def refine_slice(cfg: ExperimentConfig) -> dict[str, Any]:
    """The refiner's settings a refining cell's evaluation depends on: ``student_mode`` only for
    refiners that use a student (a streaming student's control and ceiling are the window ones)."""
    out = dict(vars(cfg.refine))
    if not uses_student(cfg) or out.get("student_mode") == "window":
        out.pop("student_mode", None)
    return out
