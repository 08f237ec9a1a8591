"""The pipeline's own costs: no repeated teacher passes, batching, MACs counted once."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bench.config import ExperimentConfig, RefineConfig
from bench.pipeline import Pipeline


class CountingTeacher(nn.Module):
    """Embeds ``[B, T]`` as (mean, std, 1) per row; records the batch of every call."""

    identity = "counting"
    dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, int]] = []

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        self.batches.append(tuple(wav.shape))
        return torch.stack([wav.mean(-1), wav.std(-1), torch.ones(wav.shape[0])], dim=-1)


class FakeCorpus:
    key = "fake"

    def __init__(self, n_spk: int = 3, n_utt: int = 12) -> None:
        rng = np.random.default_rng(0)
        self._audio = {f"s{s}_{u}": rng.standard_normal(24000).astype(np.float32) * (s + 1)
                       for s in range(n_spk) for u in range(n_utt)}

    def speakers(self, split):
        return sorted({k.split("_")[0] for k in self._audio})

    def utts_of(self, speaker, split=None):
        return [k for k in self._audio if k.startswith(speaker + "_")]

    def audio(self, uid):
        return self._audio[uid]


def _pipeline(tmp_path, teacher) -> Pipeline:
    from bench.cache import Cache

    p = Pipeline(Cache(tmp_path / "cache"))
    p.teacher = lambda cfg: teacher
    p.test_corpus = lambda cfg: FakeCorpus()
    return p


def test_each_distinct_clip_is_embedded_once_and_equal_lengths_together(tmp_path):
    teacher = CountingTeacher()
    p = _pipeline(tmp_path, teacher)
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(n).astype(np.float32) for n in (100, 100, 50))
    got = p.stages.embeddings(teacher, "k1", [a, b, a.copy(), c])
    assert sorted(teacher.batches) == [(1, 50), (2, 100)]
    want = np.stack([teacher.embed(torch.from_numpy(x)[None])[0].numpy() for x in (a, b, a, c)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    teacher.batches.clear()
    p.stages.embeddings(teacher, "k2", [c, a])  # another set sharing clips: nothing new to embed
    assert teacher.batches == []


def test_speaker_metrics_embed_the_crops_once_per_model(tmp_path):
    teacher = CountingTeacher()
    p = _pipeline(tmp_path, teacher)
    student = nn.Linear(16000, 3)
    calls: list[int] = []
    student.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    cfg = ExperimentConfig()
    out = p.speaker_metrics(cfg, student)
    n_crops = 3 * 8  # SPK_PER_SPEAKER crops of each of the 3 speakers
    assert sum(b for b, _ in teacher.batches) == n_crops  # once (EER and agreement share them)
    assert sum(calls) == n_crops
    assert {"teacher_eer", "teacher_min_dcf", "student_eer", "student_min_dcf", "student_agreement"} <= set(out)
    p.speaker_metrics(cfg, None)  # the next cell: memoised
    assert sum(b for b, _ in teacher.batches) == n_crops


def test_macs_are_counted_once_per_model_not_once_per_cell(tmp_path, monkeypatch):
    import bench.metrics.complexity as complexity
    from bench.pse.pdfnet2 import PDFNet2
    from bench.refine import make_refiner
    from bench.students.tiny import TinyStudent

    traced: list[str] = []
    real = complexity.mac_report
    monkeypatch.setattr(complexity, "mac_report", lambda m, x: traced.append(type(m).__name__) or real(m, x))
    teacher = CountingTeacher()
    p = _pipeline(tmp_path, teacher)
    model, student = PDFNet2(emb_dim=3, size="tiny"), TinyStudent(3)
    for alpha in (0.2, 0.5):  # two cells that differ only in the rate
        cfg = ExperimentConfig()
        cfg.refine = RefineConfig(name="ema", alpha=alpha)
        out = p.complexity(cfg, model, make_refiner(cfg.refine, student), student, teacher)
        assert out["extra_macs_per_s"] == out["student_macs_per_s"] > 0
    assert traced.count("PDFNet2") == 1 and traced.count("TinyStudent") == 1
