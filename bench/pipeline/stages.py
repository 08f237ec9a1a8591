"""The stage providers: corpus, teacher, eval sets, backbone, student and teacher embeddings.

Each provider takes the config slice it depends on (and the upstream artifacts it is built
from), keys its on-disk cache (``bench.cache.Cache``) by them, and is memoised in memory for the
run, so cells sharing a stage compute it once and an interrupted run resumes where it stopped.
Mapping a cell's whole config onto these slices is :class:`bench.pipeline.Pipeline`'s job.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.cache import Cache, config_hash
from bench.config import CorpusConfig, ExperimentConfig, TeacherConfig
from bench.pipeline.keys import EvalSetSpec, backbone_key

EMBED_BATCH = 16  # clips of equal length the teacher embeds at once


class Stages:
    """Stage providers with in-memory memoisation on top of the on-disk cache."""

    def __init__(self, cache: Cache, device: str = "cpu", progress: bool = True) -> None:
        self.cache = cache
        self.device = device
        self.progress = progress
        self._memo: dict[tuple[str, str], Any] = {}
        # called after each validation of a student trained here (a sweep's pruning; see distill_student)
        self.on_validation: Any = None

    def memoised(self, stage: str, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per ``(stage, key)`` for the life of this object."""
        k = (stage, key)
        if k not in self._memo:
            self._memo[k] = make()
        return self._memo[k]

    def corpus(self, corpus_cfg: CorpusConfig, eval_splits: tuple[str | None, ...], name: str = "corpus",
               train: bool = True) -> Any:
        """A corpus, validated for training (``train``) and for drawing eval mixtures from
        ``eval_splits`` (``bench.data.validate``; CorpusError lists the problems)."""
        from bench.data.corpus import load_corpus
        from bench.data.validate import validate

        key = config_hash(corpus_cfg, eval_splits) if train else config_hash("test", corpus_cfg, eval_splits)
        return self.memoised("corpus", key, lambda: validate(
            load_corpus(corpus_cfg, self.cache), self.cache, name, corpus_cfg.skip_bad, eval_splits, train=train,
            mode=getattr(corpus_cfg, "validate", "decode")))

    def teacher(self, teacher_cfg: TeacherConfig, corpus: Any) -> Any:
        """The teacher encoder; ``corpus`` matters only to a teacher trained in the suite."""
        from bench.teachers import load_teacher

        key = config_hash(teacher_cfg, corpus.key if teacher_cfg.source == "trained" else "")
        return self.memoised("teacher", key, lambda: load_teacher(teacher_cfg, self.cache, corpus, self.device))

    def eval_set(self, corpus: Any, spec: EvalSetSpec) -> list:
        """Fixed test mixtures of one condition cut from ``corpus`` (cached on disk)."""
        from bench.data.mix import load_eval_set, make_eval_set, save_eval_set

        key = spec.key(corpus.key)

        def load_or_make() -> list:
            path = self.cache.stage_dir("evalset", key) / "set.npz"
            if self.cache.is_done("evalset", key):
                return load_eval_set(path)
            mixtures = make_eval_set(corpus, spec.draw_split, spec.mix, spec.condition, spec.n, spec.seed,
                                     spec.test_s, list(spec.competing_sir_db), spec.stream_s, spec.stream_sir_snr_db)
            save_eval_set(path, mixtures)
            self.cache.mark_done("evalset", key, {"condition": spec.condition, "n": len(mixtures)})
            return mixtures

        def make() -> list:
            with self.cache.lock("evalset", key):
                return load_or_make()

        return self.memoised("evalset", key, make)

    def pse(self, cfg: ExperimentConfig, corpus: Any, teacher: Any) -> tuple[Any, dict[str, Any]]:
        """The backbone (zoo, local file or trained here; ``bench.pse.train``) with its inference
        attenuation limit. Its key is ``bench.pse.train.stage_key``: the training slice of ``cfg``
        (``pse``, ``mix``, ``eval.n_val``, ``train``), the teacher and the corpus content."""
        from bench.pse.limit import with_limit
        from bench.pse.train import train_pse

        def make() -> tuple[Any, dict[str, Any]]:
            model, info = train_pse(cfg, corpus, teacher, self.cache, device=self.device, progress=self.progress)
            model = with_limit(model, cfg.pse.atten_lim_db)
            model.eval()
            return model, info

        return self.memoised("pse", backbone_key(cfg, corpus, teacher, self.device), make)

    def student(self, cfg: ExperimentConfig, corpus: Any, teacher: Any, enhancer: Any = None) -> tuple[Any, dict]:
        """The distilled student (``bench.distill``), keyed by ``bench.distill.distill_key``
        (``student``, ``distill``, ``mix``, ``seed``, the teacher, the corpus and, when it learns
        from enhanced speech, the ``enhancer``'s identity)."""
        from bench.distill import distill_key, distill_student

        def make() -> tuple[Any, dict]:
            student, info = distill_student(cfg, corpus, teacher, self.cache, enhancer=enhancer, device=self.device,
                                            progress=self.progress, on_validation=self.on_validation)
            student.eval()
            return student, info

        return self.memoised("student", distill_key(cfg, corpus, teacher, enhancer, self.device), make)

    def weights_identity(self, pse_source: str, path: str, zoo_key: Callable[[], str]) -> str:
        """What the backbone's weights are, for cache keys: the zoo entry's or the local file's
        SHA-256, or ``trained`` (the stage key then covers the training config). ``zoo_key`` gives
        the backbone's stage key (called only for ``zoo``)."""
        from bench import zoo

        if pse_source == "local":
            return "local:" + self.memoised("sha", path, lambda: zoo.sha256(path) if
                                            os.path.isfile(path) else "missing")
        if pse_source == "zoo":
            rec = zoo.find(zoo_key())
            return f"zoo:{rec['sha256']}" if rec else "trained"
        return "trained"

    def embeddings(self, teacher: Any, key: str, clips: list[np.ndarray]) -> np.ndarray:
        """Teacher embeddings ``[N, D]`` of clips of any length (memoised by ``key``). A clip is
        embedded once per teacher however often it recurs (the enrollment conditions share their
        clean targets, and a target's late part is the whole target where nothing changes), and
        clips of equal length go through the teacher together, ``EMBED_BATCH`` at a time."""
        import torch

        def make() -> np.ndarray:
            table = self._memo.setdefault(("clip_emb", teacher.identity), {})
            audio = [np.ascontiguousarray(x, dtype=np.float32) for x in clips]
            digests = [hashlib.sha1(x.tobytes()).hexdigest() + str(len(x)) for x in audio]
            todo: dict[int, dict[str, np.ndarray]] = {}
            for d, x in zip(digests, audio, strict=True):
                if d not in table:
                    todo.setdefault(len(x), {})[d] = x
            for group in todo.values():
                ds = list(group)
                for i in range(0, len(ds), EMBED_BATCH):
                    wav = torch.from_numpy(np.stack([group[d] for d in ds[i : i + EMBED_BATCH]])).to(self.device)
                    table.update(zip(ds[i : i + EMBED_BATCH], teacher.embed(wav).float().cpu().numpy(), strict=True))
            return np.stack([table[d] for d in digests])

        return self.memoised("embed", key, make)

    def mean_embedding(self, teacher: Any, corpus: Any) -> np.ndarray:
        """The mean teacher embedding of ``corpus``'s training utterances, L2-normalised: the
        speaker-agnostic target of the ``shrink`` control."""
        from bench.pse.train import enrollment_embeddings

        def make() -> np.ndarray:
            import torch

            ids = [u.utt_id for u in corpus.utterances if u.split == "train"]
            table = enrollment_embeddings(teacher, corpus, ids, self.cache)
            m = torch.nn.functional.normalize(torch.stack(list(table.values())).float(), dim=-1).mean(0)
            return torch.nn.functional.normalize(m, dim=0).numpy()

        return self.memoised("mean_emb", teacher.identity + corpus.key, make)
