"""Sweep trials on a local SQLite storage: a dead trial is failed and its budget token comes back,
and no two trials of a study share parameters (a restart with the same seed included)."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from bench.distributed import (
    _pid_ns,
    fail_stale,
    open_storage,
    pop_waiting,
    quiet_optuna,
    return_token,
    run_budget,
    seed_budget,
    spent,
)
from bench.sweep import _create_study, duplicate_of, make_sampler


@pytest.fixture(autouse=True)
def _quiet() -> None:
    quiet_optuna()


def _url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _abandon(study, storage, worker: str, pid_ns: str = "") -> int:
    """Claim a budget token as a worker that then vanished (SIGKILL): params drawn, one heartbeat."""
    trial = pop_waiting(study, storage)
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("worker", worker)
    trial.set_user_attr("pid_ns", pid_ns)
    storage.record_heartbeat(trial._trial_id)
    return trial.number


def _x(trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


def _budget_study(storage):
    return optuna.create_study(study_name="s", storage=storage, direction="maximize",
                               sampler=make_sampler(False, 0, ["x"]))


def test_a_killed_trial_of_this_machine_is_failed_and_its_token_claimed_again(tmp_path):
    storage = open_storage(_url(tmp_path), heartbeat_s=60, retry=False, on_stale=return_token)
    study = _budget_study(storage)
    seed_budget(study, storage, 3)
    dead = _abandon(study, storage, f"{socket.gethostname()}:{_dead_pid()}", _pid_ns())
    assert run_budget(study, storage, _x, 3, 10, (ValueError,), lambda: None) == 3
    trials = study.get_trials(deepcopy=False)
    assert trials[dead].state == TrialState.FAIL
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 3 + ["FAIL"]
    assert [t.user_attrs.get("replaces") for t in trials].count(dead) == 1 and spent(study) == 3
    assert len({t.params["x"] for t in trials}) == 4


def test_a_trial_that_stopped_beating_elsewhere_is_failed_after_its_heartbeats(tmp_path):
    storage = optuna.storages.RDBStorage(_url(tmp_path), heartbeat_interval=1, grace_period=1,
                                         heartbeat_stale_trial_callback=return_token)
    study = _budget_study(storage)
    seed_budget(study, storage, 2)
    _abandon(study, storage, "another-host:123", "pid:[1]")
    assert run_budget(study, storage, _x, 2, 10, (ValueError,), lambda: None, poll_s=0.2) == 2
    states = sorted(t.state.name for t in study.get_trials(deepcopy=False))
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]


def test_only_a_trial_whose_process_is_gone_here_is_failed_at_once(tmp_path):
    storage = open_storage(_url(tmp_path), heartbeat_s=60, retry=False, on_stale=return_token)
    study = _budget_study(storage)
    seed_budget(study, storage, 4)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host, dead = socket.gethostname(), _dead_pid()
    try:
        keep = [_abandon(study, storage, f"{host}:{alive.pid}", _pid_ns()),  # still running
                _abandon(study, storage, f"{host}:{dead}", "pid:[another namespace]"),  # its PID means nothing here
                _abandon(study, storage, f"elsewhere:{dead}", _pid_ns())]  # another machine's
        gone = _abandon(study, storage, f"{host}:{dead}", _pid_ns())
        fail_stale(study)
    finally:
        alive.kill()
        alive.wait()
    trials = study.get_trials(deepcopy=False)
    assert [trials[i].state for i in keep] == [TrialState.RUNNING] * 3 and trials[gone].state == TrialState.FAIL


def _sweep_args(seed: int | None) -> argparse.Namespace:
    return argparse.Namespace(seed=seed, multi_objective=False, pruner="none", metric="si_sdr")


def _ab(trial) -> float:
    return trial.suggest_float("a", 0.0, 1.0) + trial.suggest_float("b", 0.02, 1.0, log=True)


def test_a_restart_with_the_same_seed_draws_new_parameters(tmp_path):
    storage = open_storage(_url(tmp_path), heartbeat_s=60, retry=False, on_stale=return_token)
    for _ in range(2):  # the same command twice (the first killed, or finished)
        _create_study(_sweep_args(0), "t", storage, ["a", "b"]).optimize(_ab, n_trials=3)
    trials = optuna.load_study(study_name="t", storage=storage).trials
    assert len(trials) == 6
    assert len({t.params["a"] for t in trials}) == 6 and len({t.params["b"] for t in trials}) == 6
    # a new study with a seed still proposes what the seeded TPE sampler alone does
    plain = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True))
    plain.optimize(_ab, n_trials=3)
    assert [t.params for t in trials[:3]] == [t.params for t in plain.trials]


def test_a_small_space_is_never_drawn_twice_and_then_said_to_be_exhausted(tmp_path):
    def pick(trial) -> float:
        v = trial.suggest_categorical("c", [1, 2, 3])
        twin = duplicate_of(trial)
        if twin is not None:
            raise RuntimeError(f"same as trial {twin}")
        return float(v)

    unwrapped = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    unwrapped.optimize(pick, n_trials=3, catch=(RuntimeError,))
    assert len({t.params["c"] for t in unwrapped.trials}) < 3  # what the plain sampler does with this seed
    study = optuna.create_study(sampler=make_sampler(False, 0, ["c"]))
    study.sampler.inner = optuna.samplers.RandomSampler(seed=0)
    study.optimize(pick, n_trials=3, catch=(RuntimeError,))
    assert sorted(t.params["c"] for t in study.trials) == [1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    study.optimize(pick, n_trials=1, catch=(RuntimeError,))
    assert study.trials[-1].state == TrialState.FAIL


class _FakePipe:
    """``bench.pipeline.Pipeline`` for ``bench.sweep.main``: a trial's value is its refinement rate."""

    def __init__(self, cache, device="cpu", progress=True) -> None:
        self.cache = cache
        self.on_validation = None

    def evaluate(self, cfg):
        import types

        import pandas as pd

        return types.SimpleNamespace(rows=pd.DataFrame({"si_sdr": [cfg.refine.alpha, cfg.refine.alpha]}), info={})


def test_a_sweep_restarted_after_a_kill_fails_the_dead_trial_and_repeats_no_parameters(tmp_path, monkeypatch,
                                                                                        capsys):
    from pathlib import Path

    from bench import pipeline, sweep

    monkeypatch.setattr(pipeline, "Pipeline", _FakePipe)
    grid = str(Path(__file__).resolve().parents[1] / "ablations" / "smoke.yaml")
    url = _url(tmp_path)
    args = ["--grid", grid, "--set", f"cache_dir={tmp_path / 'cache'}", "--param", "refine.alpha=0.0:1.0",
            "--study", "k", "--storage", url, "--seed", "0", "--no-progress", "--out", str(tmp_path / "out")]
    assert sweep.main([*args, "--trials", "2"]) == 0
    storage = open_storage(url, heartbeat_s=60, retry=False)
    study = optuna.load_study(study_name="k", storage=storage)
    killed = study.ask()  # a third trial, whose process was then killed
    killed.suggest_float("refine.alpha", 0.0, 1.0)
    killed.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    killed.set_user_attr("pid_ns", _pid_ns())
    assert sweep.main([*args, "--trials", "2"]) == 0  # the same command again
    trials = optuna.load_study(study_name="k", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    alphas = [t.params["refine.alpha"] for t in trials]
    assert len(set(alphas)) == len(alphas)
    assert "still running" not in capsys.readouterr().out
