"""Sweep pruning from the student's intermediate validation reports."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from bench.config import ExperimentConfig
from bench.distill import distill_student
from bench.sweep import make_pruner, report_student
from tests._kd_helpers import FakeCorpus, FakeTeacher


def _distill_cfg() -> ExperimentConfig:
    d = {"steps": 6, "batch_size": 8, "val_every": 3, "patience": 5, "window_s": 0.5, "inputs": ["clean", "noisy"]}
    return ExperimentConfig.from_dict({"distill": d, "mix": {"noise_types": ["white"]}})


def test_distill_reports_every_validation_and_a_stop_resumes(cache):
    corpus = FakeCorpus(n_train=4, n_val=2, n_test=0, n_utts=2, seconds=1.5)
    seen: list[tuple[int, float]] = []

    def stop_at_first(step: int, record: dict) -> None:
        seen.append((step, record["val_agreement"]))
        raise optuna.TrialPruned("stop")

    with pytest.raises(optuna.TrialPruned):
        distill_student(_distill_cfg(), corpus, FakeTeacher(32), cache, progress=False, on_validation=stop_at_first)
    assert [s for s, _ in seen] == [3]
    assert list(Path(cache.root, "student").glob("*/ckpt.pt"))  # the stopped stage resumes
    seen.clear()
    _, info = distill_student(_distill_cfg(), corpus, FakeTeacher(32), cache, progress=False,
                              on_validation=lambda step, rec: seen.append((step, rec["val_agreement"])))
    assert info["resumed"] and info["steps"] == 6 and [s for s, _ in seen] == [6]


class _FakePipe:
    """``student`` reports ``values`` at steps 10, 20, ... (or, cached, returns them as history)."""

    def __init__(self, values: list[float], cached: bool = False) -> None:
        self.history = [{"step": 10 * (i + 1), "val_agreement": v} for i, v in enumerate(values)]
        self.cached = cached
        self.validations = 0
        self.on_validation = None

    def student(self, cfg):
        if not self.cached:
            for rec in self.history:
                self.validations += 1
                self.on_validation(rec["step"], rec)
        return None, {"cached": self.cached, "history": self.history}


def test_a_worse_student_is_pruned_at_its_first_report_or_from_its_cached_history():
    from optuna.trial import TrialState

    from bench.distributed import quiet_optuna

    quiet_optuna()
    cfg = ExperimentConfig.from_dict({"refine": {"name": "ema", "alpha": 0.5}, "distill": {"loss": "mse"}})
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))

    def run(pipe: _FakePipe) -> TrialState:
        def objective(trial):
            report_student(pipe, cfg, trial)
            return 1.0

        study.optimize(objective, n_trials=1)
        return study.trials[-1].state

    assert run(_FakePipe([0.8, 0.9])) == TrialState.COMPLETE
    worse = _FakePipe([0.1, 0.95])
    assert run(worse) == TrialState.PRUNED and worse.validations == 1  # stopped before its second report
    assert worse.on_validation is None
    assert run(_FakePipe([0.1, 0.2], cached=True)) == TrialState.PRUNED
    assert run(_FakePipe([0.85, 0.95])) == TrialState.COMPLETE


def test_pruner_choices():
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband"), optuna.pruners.HyperbandPruner)


def test_exported_best_keeps_the_refiner_the_study_ran(tmp_path):
    """A grid whose base does not refine is swept with the default refiner; best.yaml says so."""
    from bench.config import Grid
    from bench.sweep import export_best

    root = Path(__file__).resolve().parents[1]
    grid = Grid.load(root / "ablations" / "smoke.yaml")
    path = export_best(tmp_path / "best.yaml", grid, {"refine.name": "ema", "refine.alpha": 0.3}, "s", "si_sdr")
    (cell,) = Grid.load(path).cells()
    assert cell.config.refine.name == "ema" and cell.config.refine.alpha == 0.3 and cell.config.eval.split == "test"
