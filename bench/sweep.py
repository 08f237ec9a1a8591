"""``python -m bench.sweep``: Optuna studies over temperature and refinement rate.

Tunes on the **validation** split (``eval.split=val``); report the chosen values on the test
split with ``bench.run``. A study lives in an Optuna storage (default: SQLite in the cache), so
it resumes after a crash and several workers (``--storage postgresql://...``) can share it.

Example::

    python -m bench.sweep --grid ablations/losses.yaml --set distill.loss=contrastive \\
        --param refine.alpha=0.0:1.0 --param distill.tau=0.02:1.0:log --trials 20
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Param:
    """One searched value: ``key=low:high[:log]`` (floats) or ``key=a,b,c`` (categorical)."""

    key: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: list[Any] | None = None

    @classmethod
    def parse(cls, text: str) -> Param:
        import yaml

        from bench.config import ConfigError

        if "=" not in text:
            raise ConfigError(f"--param {text!r} must look like key=low:high[:log] or key=a,b,c")
        key, spec = text.split("=", 1)
        if "," in spec:
            return cls(key=key, choices=[yaml.safe_load(v) for v in spec.split(",")])
        parts = spec.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise ConfigError(f"--param {text!r} must look like key=low:high[:log] or key=a,b,c")
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise ConfigError(f"--param {text!r}: low and high must be numbers") from None
        if not low < high:
            raise ConfigError(f"--param {text!r}: low must be below high")
        return cls(key=key, low=low, high=high, log=len(parts) == 3)

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


PRUNERS = ("none", "median", "percentile", "hyperband")
REDRAWS = 50  # draws of a trial's last value before its parameters are given up as taken


def _taken(study: Any, number: int) -> list[dict[str, Any]]:
    """The parameters of every other trial of the study that has all of them drawn (waiting budget
    tokens have none)."""
    return [t.params for t in study._storage.get_all_trials(study._study_id, deepcopy=False)
            if t.number != number and t.params]


class DistinctSampler:
    """A sampler (wrapping Optuna's ``inner``) that never gives a trial the parameters of another
    trial of its study: the value of the last of ``names`` still to be drawn is drawn again while
    the whole set equals one already there (complete, pruned, failed or running), and a relative
    draw (NSGA-II) that repeats one is replaced by independent draws. Draws are otherwise the
    inner sampler's, so a fresh study with a seed proposes what the inner sampler alone would."""

    def __init__(self, inner: Any, names: list[str]) -> None:
        self.inner = inner
        self.names = list(names)

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        drawn = self.inner.sample_relative(study, trial, search_space)
        if set(drawn) != set(self.names):
            return drawn
        taken = _taken(study, trial.number)
        for _ in range(REDRAWS):
            if drawn not in taken:
                return drawn
            drawn = self.inner.sample_relative(study, trial, search_space)
        return {}

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        if set(trial.params) | {param_name} != set(self.names) or param_name in trial.params:
            return value
        taken = _taken(study, trial.number)
        for _ in range(REDRAWS):
            if {**trial.params, param_name: value} not in taken:
                break
            value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        return value

    def before_trial(self, study: Any, trial: Any) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def duplicate_of(trial: Any) -> int | None:
    """The number of another trial of the study with exactly ``trial``'s parameters (None if none)."""
    for t in trial.study._storage.get_all_trials(trial.study._study_id, deepcopy=False):
        if t.number != trial.number and t.params and t.params == trial.params:
            return t.number
    return None


def make_pruner(name: str) -> Any:
    """Optuna pruner ``name``; the first four trials always run to the end."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=4)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def report_student(pipe: Any, cfg: Any, trial: Any) -> None:
    """Distil the trial's student (when its system uses one), reporting its validation agreement
    with the teacher at every validation step; raise ``TrialPruned`` as soon as the pruner says so.
    A student already in the cache replays its recorded validation history instead."""
    import math

    import optuna

    from bench.refine import uses_student

    if not uses_student(cfg):
        return

    def on_validation(step: int, record: dict[str, Any]) -> None:
        value = float(record.get("val_agreement", float("nan")))
        if math.isfinite(value):
            trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"student validation agreement {value:.4f} at step {step}")

    pipe.on_validation = on_validation
    try:
        _, info = pipe.student(cfg)
    finally:
        pipe.on_validation = None
    if info.get("cached"):
        for record in info.get("history") or []:
            on_validation(int(record["step"]), record)


def build_parser() -> argparse.ArgumentParser:
    from bench.distributed import add_heartbeat_option

    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--grid", required=True, help="grid YAML whose base config (and --set) the study starts from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=LOW:HIGH[:log]|A,B",
                   help="a searched value (repeatable); default: refine.alpha=0:1 and distill.tau=0.02:1:log")
    p.add_argument("--trials", type=int, default=20, help="trials to run in this process")
    p.add_argument("--study", default=None, help="study name (default: derived from grid and params)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite in the cache)")
    p.add_argument("--metric", default="si_sdr",
                   help=f"validation metric to optimise (mean over utterances and conditions): {', '.join(SWEEP_METRICS)}, "
                        "or a plugin metric (bench.metrics.spec) that the grid's eval.metrics scores; maximised, "
                        "or minimised where the metric says lower is better")
    p.add_argument("--seed", type=int, default=None,
                   help="sampler seed (default: drawn per worker, so workers started together propose different "
                        "trials; give one to reproduce a single-worker study)")
    p.add_argument("--total-trials", type=int, default=None,
                   help="a budget for the whole study, over every worker: the first worker with this budget tops the "
                        "study up to this many trials (waiting ones, claimed one at a time), so exactly this many run "
                        "to their end (complete, pruned or failed), however many workers share it; a trial whose "
                        "worker died is failed and its token handed back, so it is run again with new values")
    p.add_argument("--pruner", default="none", choices=sorted(PRUNERS),
                   help="stop a trial early from its student's validation reports (agreement with the teacher "
                        "every distill.val_every steps) against the other trials' at the same step; worth it when "
                        "only the student's values are searched: agreement says little about a refinement rate "
                        "(default: none; ignored with --multi-objective)")
    add_heartbeat_option(p, "a running trial's", "the trial is failed, so it no longer counts as running")
    p.add_argument("--multi-objective", action="store_true",
                   help="maximise the metric and minimise total MACs per second (NSGA-II); prints the Pareto front")
    p.add_argument("--out", default=None, help="where trials.csv goes (default: results/sweep-<study>)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import optuna

    from bench.cache import Cache, atomic_path, config_hash, default_root
    from bench.config import ConfigError
    from bench.distributed import fail_stale, open_storage, redact, return_token, run_budget
    from bench.pipeline import Pipeline
    from bench.registry import RegistryError
    from bench.report import provenance, write_json
    from bench.runtime import set_threads

    try:
        grid, params, base, probe, device = _setup(args)
    except (ConfigError, RegistryError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    set_threads()
    cache = Cache(default_root(probe.cache_dir))
    pipe = Pipeline(cache, device=device, progress=not args.no_progress)
    name = args.study or f"{grid.name}-{args.metric}-{config_hash(base, [p.key for p in params], length=8)}"
    url = args.storage or f"sqlite:///{cache.root / 'optuna.db'}"
    try:
        storage = open_storage(url, args.heartbeat, retry=False, on_stale=return_token)
    except Exception as exc:  # noqa: BLE001 - a missing driver or an unreachable server: one line
        hint = " (pip install -e .[scale])" if isinstance(exc, ModuleNotFoundError) else ""
        print(f"error: --storage {redact(url)}: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 2
    study = _create_study(args, name, storage, [p.key for p in params])
    fail_stale(study)  # a trial of a killed earlier sweep on this machine fails now, elsewhere after its heartbeats
    objective = _objective(args, base, params, pipe)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out or Path("results") / f"sweep-{name}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "provenance.json", {
        "study": name, "storage": redact(url), "grid_file": args.grid, "argv": sys.argv if argv is None else argv,
        "params": [asdict(p) for p in params], "metric": args.metric, "split": "val",
        "teacher_source": probe.teacher.source, "cache_root": str(cache.root), **provenance(device),
    })

    def dump(*_: Any) -> None:  # after every trial, so a crash loses nothing
        with atomic_path(out / "trials.csv") as tmp:
            study.trials_dataframe().to_csv(tmp, index=False)

    catch = (RuntimeError, ValueError, FloatingPointError)
    try:
        if args.total_trials is None:
            study.optimize(objective, n_trials=args.trials, show_progress_bar=not args.no_progress, catch=catch,
                           callbacks=[dump])
        else:  # budget tokens in the storage: exactly total_trials trials, however many workers
            run_budget(study, storage, objective, args.total_trials, args.trials, catch, dump)
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept in the study (re-run to resume) and in trials.csv",
              file=sys.stderr)
    fail_stale(study)
    dump()
    return _summary(args, study, name, redact(url), out, grid, base["refine"]["name"])


def _setup(args: argparse.Namespace) -> tuple[Any, list[Param], dict[str, Any], Any, Any]:
    """``(grid, params, base config dict, base config, device)`` of the study; raises ConfigError,
    RegistryError or RuntimeError on a bad grid, parameter or device."""
    from bench.config import ExperimentConfig, Grid
    from bench.runtime import pick_device

    grid = Grid.load(args.grid, overrides=args.overrides)
    params = [Param.parse(p) for p in (args.params or ["refine.alpha=0.0:1.0", "distill.tau=0.02:1.0:log"])]
    # the grid's base config (with --set applied), not its first cell (often a baseline)
    base = ExperimentConfig.from_dict({**grid.base, "name": grid.name}).to_dict()
    from bench.refine import default_system, refiner_class

    if not refiner_class(base["refine"]["name"]).updates_embedding:  # a sweep over alpha needs a refiner
        base["refine"]["name"] = default_system()
    base["eval"]["split"] = "val"
    base["eval"]["n_test"] = base["eval"].get("n_val", 20)
    probe = ExperimentConfig.from_dict(base)
    _check_metric(args.metric, probe)
    for p in params:
        _probe_value(base, p)
    device = pick_device(probe.device)
    return grid, params, base, probe, device


SWEEP_METRICS = ("si_sdr", "late_si_sdr", "pesq", "stoi", "estoi")


def _check_metric(metric: str, cfg: Any) -> None:
    """``--metric`` is a built-in sweep metric, or a plugin metric the config scores (ConfigError)."""
    from bench.config import EVAL_METRICS, ConfigError, metric_choices

    users = [m for m in metric_choices() if m not in EVAL_METRICS]
    if metric not in (*SWEEP_METRICS, *users):
        raise ConfigError(f"--metric {metric!r} is not allowed; choices: {', '.join((*SWEEP_METRICS, *users))}")
    if metric in users and metric not in cfg.eval.metrics:
        raise ConfigError(f"--metric {metric!r} is a plugin metric the grid does not score: add it to eval.metrics")


def direction(metric: str) -> str:
    """``maximize``, or ``minimize`` for a plugin metric that declares lower is better."""
    from bench.config import EVAL_METRICS
    from bench.metrics.spec import spec

    if metric in SWEEP_METRICS or metric in EVAL_METRICS:
        return "maximize"
    return "maximize" if spec(metric).higher_is_better else "minimize"


def make_sampler(multi_objective: bool, seed: int, names: list[str]) -> DistinctSampler:
    """NSGA-II with ``multi_objective``, else TPE, never repeating a trial's parameters."""
    import optuna

    if multi_objective:
        return DistinctSampler(optuna.samplers.NSGAIISampler(seed=seed), names)
    # constant_liar: running trials count as bad guesses, so workers do not crowd one region
    return DistinctSampler(optuna.samplers.TPESampler(seed=seed, constant_liar=True), names)


def resumed_seed(seed: int, n_trials: int) -> int:
    """The sampler seed of a study that already holds ``n_trials`` trials: ``seed`` for a new study
    (reproducible), else one drawn from both, so a restart with the same ``--seed`` does not replay
    the draws of the first start."""
    from bench.cache import config_hash

    return seed if n_trials == 0 else int(config_hash(seed, n_trials, length=8), 16)


def _create_study(args: argparse.Namespace, name: str, storage: Any, names: list[str]) -> Any:
    """The study (created or loaded): NSGA-II with --multi-objective, else TPE with the pruner."""
    import optuna

    seed = args.seed if args.seed is not None else _worker_seed()
    sampler = make_sampler(args.multi_objective, seed, names)
    if args.multi_objective:
        study = optuna.create_study(study_name=name + "-mo", storage=storage, directions=[direction(args.metric), "minimize"],
                                    sampler=sampler, load_if_exists=True)
    else:
        study = optuna.create_study(study_name=name, storage=storage, direction=direction(args.metric), sampler=sampler,
                                    pruner=make_pruner(args.pruner), load_if_exists=True)
    n_trials = len(study.get_trials(deepcopy=False))
    if args.seed is not None and n_trials:
        study.sampler = make_sampler(args.multi_objective, resumed_seed(seed, n_trials), names)
    return study


def _objective(args: argparse.Namespace, base: dict[str, Any], params: list[Param], pipe: Any) -> Callable[[Any], Any]:
    """The trial objective: validation ``args.metric`` (and total MACs/s with --multi-objective)."""
    from bench.config import ExperimentConfig

    prune = args.pruner != "none" and not args.multi_objective

    def objective(trial) -> float:
        from bench.config import set_dotted
        from bench.distributed import mark_worker

        mark_worker(trial)
        data = _copy(base)
        for p in params:
            set_dotted(data, p.key, p.suggest(trial))
        twin = duplicate_of(trial)
        if twin is not None:  # every value of a small searched space was tried: nothing new to run
            raise RuntimeError(f"the parameters {trial.params} are those of trial {twin}; the searched values "
                               "have no untried setting left")
        cfg = ExperimentConfig.from_dict(data)
        if prune:
            report_student(pipe, cfg, trial)
        res = pipe.evaluate(cfg)
        values = res.rows[args.metric]
        trial.set_user_attr("split", "val")
        trial.set_user_attr("n_rows", int(len(res.rows)))
        trial.set_user_attr("metric_failures", int(values.isna().sum()))
        trial.set_user_attr("teacher_source", cfg.teacher.source)
        trial.set_user_attr("teacher_weights", str(res.info.get("teacher_weights", "")))
        if values.isna().all():
            raise RuntimeError(f"every {args.metric} value of this trial failed")
        macs = float(res.info.get("total_macs_per_s", float("nan")))
        trial.set_user_attr("total_macs_per_s", macs)
        if args.multi_objective:
            return float(values.mean()), macs
        return float(values.mean())

    return objective


def _summary(args: argparse.Namespace, study: Any, name: str, url: str, out: Path, grid: Any, refiner: str) -> int:
    """Print the study's outcome and export the best config (with ``refiner``, the refiner the
    study ran); the exit status."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    print(f"study {name!r} ({len(study.trials)} trials, {len(done)} complete, {pruned} pruned, storage {url})")
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    if running:
        print(f"{running} trial(s) still running: another worker's, or one whose worker died elsewhere (failed once "
              "it misses 3 heartbeats, by the next sweep of this study)")
    if not done:
        print(f"error: no trial of study {name!r} completed; see {out / 'trials.csv'} and the log above",
              file=sys.stderr)
        return 1
    def fmt(params: dict) -> str:
        return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())

    if args.multi_objective:
        print(f"Pareto front (validation {args.metric} vs total MACs/s), {len(study.best_trials)} trial(s):")
        for t in sorted(study.best_trials, key=lambda t: t.values[1]):
            print(f"  {args.metric} {t.values[0]:.3f}, {t.values[1] / 1e6:.1f} MMAC/s: {fmt(t.params)}")
        sign = 1.0 if direction(args.metric) == "maximize" else -1.0
        best = max(study.best_trials, key=lambda t: sign * t.values[0])
    else:
        best = study.best_trial
        print(f"best validation {args.metric}: {best.value:.3f} at {fmt(best.params)}")
    # the refiner the study ran (a grid whose base does not refine is swept with the default one)
    grid_path = export_best(out / "best.yaml", grid, {"refine.name": refiner, **best.params}, name, args.metric)
    print(f"trials: {out / 'trials.csv'}")
    print(f"best config (tuned on validation; report it on test once): python -m bench.run --grid {grid_path}")
    return 0


def _worker_seed() -> int:
    """A sampler seed that differs between workers started at the same moment (pid, host, time)."""
    import os
    import socket
    import time

    mixed = int.from_bytes(os.urandom(4), "little") ^ (os.getpid() << 8) ^ hash(socket.gethostname()) ^ time.time_ns()
    return mixed & 0xFFFFFFFF


def export_best(path: Path, grid: Any, params: dict[str, Any], study: str, metric: str) -> Path:
    """A grid file holding the study's base config with the best trial's values, evaluated on the
    test split by ``bench.run`` (its static baseline, control and ceiling are added as usual)."""
    import yaml

    from bench.cache import atomic_write_text
    from bench.config import set_dotted

    base = _copy(grid.base)
    for k, v in params.items():
        set_dotted(base, k, v)
    base.setdefault("eval", {})["split"] = "test"
    text = (f"# Best trial of study {study!r} (maximising validation {metric}); tuned on the validation split,\n"
            f"# to be reported once on test: python -m bench.run --grid {path}\n")
    text += yaml.safe_dump({"name": f"{grid.name}-tuned", "base": base, "systems": [{}]}, sort_keys=False)
    atomic_write_text(path, text)
    return path


def _probe_value(base: dict, p: Param) -> None:
    """Validate that both ends of a searched range are legal config values before searching."""
    from bench.config import ExperimentConfig, set_dotted

    for v in (p.choices if p.choices is not None else [p.low, p.high]):
        data = _copy(base)
        set_dotted(data, p.key, v)
        ExperimentConfig.from_dict(data)


def _copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_copy(v) for v in d]
    return d


if __name__ == "__main__":
    raise SystemExit(main())

