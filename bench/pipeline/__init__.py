"""The staged pipeline behind ``bench.run``.

config -> corpus -> eval mixtures -> teacher (embeddings cached) -> PSE backbone (cached per
teacher) -> student (cached per teacher, loss, tau, seed) -> streaming evaluation (cached per
cell) -> per-utterance rows.

Where each part lives:

* :mod:`bench.pipeline.keys`: what each stage and each cell depend on (config slices, cache keys);
* :mod:`bench.pipeline.stages`: the stage providers, each taking its config slice, memoised in
  memory on top of the on-disk cache (cells sharing a stage compute it once; an interrupted run
  resumes where it stopped);
* :mod:`bench.pipeline.cell`: one cell's evaluation (streaming, per-utterance scores, timing);
* :mod:`bench.pipeline.speakers` and :mod:`bench.pipeline.cost`: speaker verification and
  complexity of a cell's models;
* :class:`Pipeline` (here): maps a cell's config onto those slices; the one object the runner,
  the sweeps and the report assets talk to. Reports are built from its rows by ``bench.report``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.cache import Cache, atomic_path, config_hash
from bench.config import ExperimentConfig
from bench.pipeline import cell, cost, speakers
from bench.pipeline.cell import EVAL_BATCH, CellResult
from bench.pipeline.keys import (
    EVAL_SEED_OFFSET,
    STAGE_VERSION,
    EvalSetSpec,
    backbone_key,
    eval_slice,
    eval_split,
    mixture_key,
    n_items,
)
from bench.pipeline.stages import Stages
from bench.readings import space_label, student_reading, teacher_reading
from bench.refine import updates_embedding
from bench.runtime import key_extras

__all__ = ["EVAL_BATCH", "EVAL_SEED_OFFSET", "STAGE_VERSION", "CellResult", "EvalSetSpec", "Pipeline", "Stages",
           "eval_slice", "eval_split", "n_items"]


class Pipeline:
    """A cell's stages and its evaluation; every method takes the cell's whole config and hands
    each stage the slice it depends on."""

    def __init__(self, cache: Cache, device: str = "cpu", progress: bool = True) -> None:
        self.stages = Stages(cache, device, progress)

    @property
    def cache(self) -> Cache:
        return self.stages.cache

    @property
    def device(self) -> str:
        return self.stages.device

    @property
    def on_validation(self) -> Any:
        """Called after each validation of a student trained here (a sweep's pruning)."""
        return self.stages.on_validation

    @on_validation.setter
    def on_validation(self, fn: Any) -> None:
        self.stages.on_validation = fn

    # ------------------------------------------------------------------ stages
    def corpus(self, cfg: ExperimentConfig) -> Any:
        """The training corpus, validated (``bench.data.validate``; CorpusError lists problems)."""
        splits = ("val",) if cfg.test_corpus.name else ("val", eval_split(cfg))
        return self.stages.corpus(cfg.corpus, splits)

    def teacher(self, cfg: ExperimentConfig) -> Any:
        """The encoder the cell's backbone is conditioned on: the teacher, or with ``reading:
        student`` (personalized cells) the distilled student standing in for it
        (:class:`bench.pipeline.space.StudentSpaceTeacher`)."""
        real = self.stages.teacher(cfg.teacher, self.corpus(cfg))
        if not student_reading(cfg):
            return real
        from bench.distill import distill_key
        from bench.pipeline.space import StudentSpaceTeacher

        tcfg = teacher_reading(cfg)
        student, _ = self.student(tcfg)
        key = distill_key(tcfg, self.corpus(cfg), real, self._enhancer(tcfg), self.device)
        return self.stages.memoised("space", key, lambda: StudentSpaceTeacher(
            student, real, key, space_label(cfg).removeprefix("student-space-")))

    def test_corpus(self, cfg: ExperimentConfig) -> Any:
        """The corpus the evaluation mixtures come from: ``test_corpus`` when one is named
        (cross-corpus evaluation), else the training corpus itself."""
        if not cfg.test_corpus.name:
            return self.corpus(cfg)
        return self.stages.corpus(cfg.test_corpus, (eval_split(cfg),), name="test_corpus", train=False)

    def evalset_key(self, cfg: ExperimentConfig, condition: str) -> str:
        """Content key of one condition's fixed test mixtures (everything they depend on)."""
        return EvalSetSpec.of(cfg, condition).key(self.test_corpus(cfg).key)

    def eval_set(self, cfg: ExperimentConfig, condition: str) -> list:
        """Fixed test mixtures of one condition (cached on disk)."""
        return self.stages.eval_set(self.test_corpus(cfg), EvalSetSpec.of(cfg, condition))

    def pse(self, cfg: ExperimentConfig) -> tuple[Any, dict[str, Any]]:
        return self.stages.pse(cfg, self.corpus(cfg), self.teacher(cfg))

    def student(self, cfg: ExperimentConfig) -> tuple[Any, dict[str, Any]]:
        """The distilled student: distilled from the teacher (with enhanced inputs from the
        teacher-space backbone) in both readings, so a student-reading cell refines with the very
        student its backbone is conditioned on."""
        cfg = teacher_reading(cfg)
        return self.stages.student(cfg, self.corpus(cfg), self.teacher(cfg), self._enhancer(cfg))

    def _enhancer(self, cfg: ExperimentConfig) -> Any:
        """The backbone a student learning from enhanced speech gets it from (None otherwise)."""
        if "enhanced" not in cfg.distill.inputs:
            return None
        pse_model, _ = self.pse(cfg)
        return _Enhancer(pse_model, backbone_key(cfg, self.corpus(cfg), self.teacher(cfg), self.device))

    def weights_identity(self, cfg: ExperimentConfig) -> str:
        """What the backbone's weights are, for cache keys (see :meth:`Stages.weights_identity`)."""
        from bench.pse.train import stage_key

        return self.stages.weights_identity(cfg.pse.source, cfg.pse.path,
                                            lambda: stage_key(cfg, self.corpus(cfg), self.teacher(cfg)))

    def start_embeddings(self, cfg: ExperimentConfig, condition: str, start: str = "enrollment") -> np.ndarray:
        """Teacher embeddings ``[N, D]`` the streams of one eval set start from: of the (degraded)
        ``enrollment``, of the whole ``clean_target`` or of the ``clean_enrollment``."""
        mixtures = self.eval_set(cfg, condition)
        audio = {"enrollment": lambda m: m.enrollment, "clean_target": lambda m: m.target,
                 "clean_enrollment": lambda m: m.enrollment_clean}
        if start not in audio:
            raise ValueError(f"unknown start embedding {start!r}; choices: {', '.join(audio)}")
        teacher = self.teacher(cfg)
        key = config_hash(teacher.identity, self.evalset_key(cfg, condition), start)
        return self.stages.embeddings(teacher, key, [audio[start](m) for m in mixtures])

    def enrollment_embeddings(self, cfg: ExperimentConfig, condition: str, clean_target: bool = False) -> np.ndarray:
        """Teacher embeddings of the enrollments (or, with ``clean_target``, of the clean targets)."""
        return self.start_embeddings(cfg, condition, "clean_target" if clean_target else "enrollment")

    def target_embeddings(self, cfg: ExperimentConfig, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """``(whole, late)``: teacher embeddings of each clean target, and of its late part (after
        ``late_start_s``; the whole target again where a condition has no change)."""
        mixtures = self.eval_set(cfg, condition)
        whole = self.start_embeddings(cfg, condition, "clean_target")
        teacher = self.teacher(cfg)
        key = config_hash(teacher.identity, self.evalset_key(cfg, condition), "late_target")
        late = [m.target[cell.late_start(m) or 0 :] for m in mixtures]
        return whole, self.stages.embeddings(teacher, key, late)

    def mean_embedding(self, cfg: ExperimentConfig) -> np.ndarray:
        """The speaker-agnostic target of the ``shrink`` control (:meth:`Stages.mean_embedding`)."""
        return self.stages.mean_embedding(self.teacher(cfg), self.corpus(cfg))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, cfg: ExperimentConfig) -> CellResult:
        """Score one cell on every condition of ``cfg.eval.conditions`` (cached per cell)."""
        # the device (when not the CPU) and the training runtime (bench.runtime.key_extras): a cell
        # scored on a GPU, or with stages trained another way, is another result; nothing on a CPU
        # with the defaults, so cached cells stay valid
        key = config_hash(eval_slice(cfg), self.weights_identity(cfg), *key_extras(self.device, cfg.train))
        csv = self.cache.stage_dir("eval", key) / "rows.csv"
        with self.cache.lock("eval", key):
            if self.cache.is_done("eval", key):
                return CellResult(pd.read_csv(csv), self.cache.read_meta("eval", key))
            rows, info = self._evaluate(cfg)
            with atomic_path(csv) as tmp:
                rows.to_csv(tmp, index=False)
            info["eval_key"] = key
            self.cache.mark_done("eval", key, info)
            return CellResult(rows, info)

    def _evaluate(self, cfg: ExperimentConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
        return cell.evaluate_cell(self, cfg)

    def mixture_rows(self, cfg: ExperimentConfig) -> pd.DataFrame:
        """Metrics of the unprocessed mixture on every condition (cached)."""
        key = mixture_key(cfg, self.test_corpus(cfg).key)
        csv = self.cache.stage_dir("eval", key) / "rows.csv"
        if self.cache.is_done("eval", key):
            return pd.read_csv(csv)
        sets = {cond: self.eval_set(cfg, cond) for cond in cfg.eval.conditions}
        outs = {cond: [m.mixture for m in ms] for cond, ms in sets.items()}
        rows = cell.score(cfg, sets, outs)
        with atomic_path(csv) as tmp:
            rows.to_csv(tmp, index=False)
        self.cache.mark_done("eval", key, {})
        return rows

    def stream_timing(self, cfg: ExperimentConfig, model: Any, refiner: Any, block_s: float) -> dict[str, float]:
        """One stream's real-time cost (:func:`bench.pipeline.cell.stream_timing`)."""
        return cell.stream_timing(self, cfg, model, refiner, block_s)

    def speaker_metrics(self, cfg: ExperimentConfig, student: Any) -> dict[str, float]:
        """EER / minDCF of teacher and student on the eval speakers (:mod:`bench.pipeline.speakers`)."""
        return speakers.speaker_metrics(self.stages, self.teacher(cfg), self.test_corpus(cfg), eval_split(cfg),
                                        student)

    def complexity(self, cfg: ExperimentConfig, model: Any, refiner: Any, student: Any, teacher: Any) -> dict:
        """Params and MACs of the cell's models (:func:`bench.pipeline.cost.complexity`)."""
        refining = updates_embedding(cfg) and cfg.refine.alpha > 0
        return cost.complexity(self.stages, cfg.refine, cfg.pse.personalized, refining, model, refiner, student,
                               teacher)


class _Enhancer:
    """Callable wrapper giving the distillation trainer enhanced speech from the backbone."""

    def __init__(self, model: Any, identity: str) -> None:
        self.model = model
        self.identity = identity

    def __call__(self, mixture: Any, emb: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.model(mixture, emb)
