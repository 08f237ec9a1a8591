"""Many workers, one grid: ``python -m bench.run --grid G --storage URL`` on every worker.

A grid's cells (and the unprocessed mixture) become the trials of one Optuna study in an RDB
storage (PostgreSQL for many machines, SQLite for one): the first worker creates the study and
enqueues one waiting trial per cell; every worker then claims waiting trials one at a time (the
storage's row lock turns a waiting trial into a running one for exactly one worker) and
evaluates the cell into the shared cache, whose stage locks keep any two workers from training
the same backbone or student. A running claim carries a heartbeat; a worker that dies stops
beating, and once the grace period is over any other worker fails the stale trial and enqueues
it again (``RetryHeartbeatStaleTrialCallback``), so its cell is picked up. Workers stay until no
cell is waiting or running, then each writes the leaderboard of every finished cell (one at a
time, under a file lock next to the output folder); ``--board-only`` writes it without claiming.

The study's name is the grid's name and a hash of its cell ids: a changed grid is a new study,
and a re-run of a finished one only writes the leaderboard (cells come from the cache).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.grid import (
    EXIT_CELL_FAILED,
    cell_links,
    cell_row,
    describe,
    fail,
    mixture_cell_row,
    trajectory_rows,
    write_board,
    write_tables,
)

log = logging.getLogger("bench")

MIXTURE = "mixture"
CLAIM = "cell"  # the one parameter of a claim: an index into GridPlan.ids
MAX_RETRY = 3  # a cell whose worker died this many times is reported failed
SEED_WAIT_S = 300.0  # how long a worker waits for another one to finish enqueueing a study


@dataclass
class GridPlan:
    """What the workers of one grid share: the study name and the claimable items (``mixture``
    first, then the cells' ids, each cell evaluated once)."""

    study: str
    ids: list[str]
    cells: dict[str, Any]

    @property
    def first(self) -> Any:
        """The config the mixture rows, device and bootstrap come from (as in ``run_grid``)."""
        return next(iter(self.cells.values())).config


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_plan(grid_name: str, cells: list) -> GridPlan:
    """Cells keyed by their evaluation's hash (cells that evaluate alike run once), in grid order."""
    from bench.cache import config_hash
    from bench.pipeline import eval_slice

    unique: dict[str, Any] = {}
    for c in cells:
        unique.setdefault(config_hash(eval_slice(c.config)), c)
    ids = [MIXTURE, *unique]
    return GridPlan(study=f"bench.run:{grid_name}:{config_hash(ids, length=12)}", ids=ids, cells=unique)


def quiet_optuna() -> None:
    """Heartbeats and retries are marked experimental; say so once in the README, not per call."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


HEARTBEAT_S = 60  # default seconds between heartbeats


def add_heartbeat_option(parser: Any, beats: str, stale: str, when: str = "") -> None:
    """``--heartbeat S`` on ``parser``: seconds between the heartbeats of ``beats``; after three missed
    ones ``stale`` (``when``: the help's opening condition). Values under 1 s are refused with the
    value named (exit 2, no traceback)."""
    def seconds(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: give whole seconds, at least 1 "
                                             f"({HEARTBEAT_S} is usual)")
        return value

    parser.add_argument("--heartbeat", type=seconds, default=HEARTBEAT_S, metavar="S",
                        help=f"{when}seconds between {beats} heartbeats; after three missed ones {stale} "
                             f"(default: {HEARTBEAT_S})")


def open_storage(url: str, heartbeat_s: int, retry: bool = True,
                 on_stale: Callable[[Any, Any], None] | None = None) -> Any:
    """An RDB storage whose running trials beat every ``heartbeat_s`` seconds and go stale after
    three missed beats; with ``retry`` a stale trial is enqueued again (at most MAX_RETRY times),
    else ``on_stale(study, failed_trial)`` is called once for it (if given)."""
    import random

    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    quiet_optuna()
    callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY) if retry else on_stale
    engine = {"pool_pre_ping": True} if url.startswith("postgresql") else None
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                                              grace_period=3 * heartbeat_s, heartbeat_stale_trial_callback=callback)
        except (IntegrityError, ProgrammingError):  # workers creating the tables of an empty database at once
            if attempt == 4:
                raise
            time.sleep(random.uniform(0.5, 2.0))
    raise AssertionError("unreachable")


def redact(url: str) -> str:
    """The storage URL without its password (for logs and provenance)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an odd URL is shown as its scheme only
        return url.split("://", 1)[0] + "://..."


def once(storage: Any, name: str, fn: Callable[[], None], wait_s: float = SEED_WAIT_S) -> None:
    """Run ``fn`` in exactly one of the workers that call this with the same ``name``: the one that
    creates the marker study ``name`` runs it and marks it done; the others wait for the mark."""
    import optuna

    try:
        marker = optuna.create_study(study_name=name, storage=storage)
    except optuna.exceptions.DuplicatedStudyError:
        sid = storage.get_study_id_from_name(name)
        deadline = time.monotonic() + wait_s
        while not storage.get_study_user_attrs(sid).get("done"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"study {name!r} was started by another worker that never finished setting it up "
                                   f"(it died?); delete it (optuna delete-study --study-name '{name}') and "
                                   "start again") from None
            time.sleep(0.5)
        return
    fn()
    marker.set_user_attr("done", True)


def open_grid_study(storage: Any, plan: GridPlan) -> Any:
    """The grid's study, created and filled with one waiting claim per item by the first worker."""
    import optuna

    # a claim's cell is fixed when it is enqueued: the sampler never draws one (value: seconds spent)
    study = optuna.create_study(study_name=plan.study, storage=storage, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(), load_if_exists=True)

    def enqueue() -> None:
        for i, item in enumerate(plan.ids):
            study.enqueue_trial({CLAIM: i}, user_attrs={"item": item})

    once(storage, plan.study + ":enqueued", enqueue)
    return study


def pop_waiting(study: Any, storage: Any) -> Any | None:
    """Claim one waiting trial of ``study`` (None when none is left): exactly one worker turns a
    waiting trial into a running one (the storage locks its row)."""
    import optuna
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def count(study: Any, *states: Any) -> int:
    """How many of the study's trials are in ``states`` (read from the storage, not a cache)."""
    return len(study.get_trials(deepcopy=False, states=states))


@contextmanager
def heartbeat(storage: Any, trial: Any) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the body runs (a daemon thread)."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; a dead one is a stale claim
                log.warning("heartbeat of trial %s failed: %s", trial.number, exc)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale(study: Any) -> None:
    """Fail the running trials whose worker stopped beating, and at once those whose worker is a
    process of this machine that no longer exists (see :func:`mark_worker`); the storage's stale
    callback then runs for each (a retry, or a budget token handed back)."""
    import optuna

    quiet_optuna()
    optuna.storages.fail_stale_trials(study)
    fail_dead_here(study)


def _pid_ns() -> str:
    """This process's PID namespace (Linux), so that a PID is only ever compared within one; "" elsewhere."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def mark_worker(trial: Any) -> None:
    """Record which process runs ``trial`` (``worker``: host and PID; ``pid_ns``), so that once that
    process is gone a worker on the same machine fails the trial without waiting for heartbeats."""
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr("pid_ns", _pid_ns())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def dead_here(trial: Any) -> bool:
    """Whether ``trial`` was run by a process of this machine and PID namespace that has exited."""
    ns = _pid_ns()
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    return (bool(ns) and trial.user_attrs.get("pid_ns") == ns and host == socket.gethostname() and pid.isdigit()
            and int(pid) != os.getpid() and not _alive(int(pid)))


def fail_dead_here(study: Any) -> None:
    """Fail the running trials of ``study`` whose worker process died on this machine (killed, say)
    and run the storage's stale callback for each (exactly once, whichever worker gets there first)."""
    import copy

    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not dead_here(t):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        log.warning("trial %s failed: its worker %s has exited", t.number, t.user_attrs.get("worker"))
        callback = storage.get_heartbeat_stale_trial_callback() if hasattr(
            storage, "get_heartbeat_stale_trial_callback") else None
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(t._trial_id)))


def tell(study: Any, trial: Any, **kw: Any) -> bool:
    """``study.tell``; False when the trial was already finished (failed as stale by another worker)."""
    import optuna

    try:
        study.tell(trial, **kw)
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as exc:
        log.warning("trial %s was finished elsewhere (%s); its result is in the cache", trial.number, exc)
        return False
    return True



# --------------------------------------------------------------------------- sweeps with a budget
def seed_budget(study: Any, storage: Any, total: int) -> None:
    """Top the study up to ``total`` trials with empty waiting ones (budget tokens: their values
    are drawn by the sampler when claimed), once per total, whichever worker gets there first."""

    def top_up() -> None:
        for _ in range(max(0, total - len(study.get_trials(deepcopy=False)))):
            study.enqueue_trial({}, user_attrs={"budget": total})

    once(storage, f"{study.study_name}:budget={total}", top_up)


def return_token(study: Any, trial: Any) -> None:
    """The stale callback of a budget: a budget token whose trial died (its worker killed) or was
    interrupted comes back as a new empty waiting token (its values drawn afresh when claimed), so
    the budget still buys ``total`` trials that ran to the end."""
    if "budget" not in trial.user_attrs:
        return
    study.enqueue_trial({}, user_attrs={"budget": trial.user_attrs["budget"], "replaces": trial.number})
    log.warning("trial %s did not finish; its budget token waits for a worker again", trial.number)


def spent(study: Any) -> int:
    """Budget tokens used: trials started (running or finished) less those whose token came back."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    returned = {t.user_attrs["replaces"] for t in trials if "replaces" in t.user_attrs}
    return sum(t.state != TrialState.WAITING for t in trials) - len(returned)


def run_budget(study: Any, storage: Any, objective: Callable[[Any], Any], total: int, n_max: int,
               catch: tuple[type[Exception], ...], after: Callable[[], None], poll_s: float = 1.0) -> int:
    """Claim budget tokens and run ``objective`` on each, at most ``n_max`` in this worker; the
    study never spends more than ``total`` tokens, however many workers share it. With nothing
    left to claim, a worker waits while other trials run: one whose worker dies is failed (at once
    on this machine, else after its missed heartbeats) and its token, handed back by
    :func:`return_token` when that is the storage's stale callback, is claimed. Returns the number
    run here."""
    from optuna.trial import TrialState

    seed_budget(study, storage, total)
    beats = bool(storage.get_heartbeat_interval()) if hasattr(storage, "get_heartbeat_interval") else False
    n, said = 0, False
    while n < n_max:
        fail_stale(study)
        # waiting trials of a larger earlier budget stay
        used = spent(study)
        trial = pop_waiting(study, storage) if used < total else None
        if trial is not None:
            run_trial(study, storage, trial, objective, catch)
            after()
            n += 1
            continue
        running = count(study, TrialState.RUNNING)
        if not (beats and running and used - running < total):  # no running trial holds a token of this budget
            break
        if not said:
            log.info("waiting for %d running trial(s) of other workers (one whose worker died is failed after its "
                     "missed heartbeats, and its budget token claimed here)", running)
            said = True
        time.sleep(poll_s)
    return n


def run_trial(study: Any, storage: Any, trial: Any, objective: Callable[[Any], Any],
              catch: tuple[type[Exception], ...]) -> None:
    """Run one claimed trial under a heartbeat and tell its outcome (complete, pruned or failed)."""
    import optuna
    from optuna.trial import TrialState

    try:
        with heartbeat(storage, trial):
            value = objective(trial)
    except optuna.TrialPruned:
        tell(study, trial, state=TrialState.PRUNED)
        return
    except (*catch, KeyboardInterrupt) as exc:
        log.warning("trial %s failed: %s: %s", trial.number, type(exc).__name__, exc)
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
        told = tell(study, trial, state=TrialState.FAIL)
        if isinstance(exc, KeyboardInterrupt):
            if told:
                return_token(study, storage.get_trial(trial._trial_id))
            raise
        return
    tell(study, trial, values=value)


# --------------------------------------------------------------------------- one worker
def prepare(pipe: Any, plan: GridPlan) -> None:
    """Load (building once, one worker at a time) every corpus and teacher the cells need, so
    workers starting together on an empty cache never build the same corpus twice."""
    from filelock import FileLock

    with FileLock(str(pipe.cache.root / ".prepare.lock")):
        for c in plan.cells.values():
            pipe.corpus(c.config)
            pipe.test_corpus(c.config)
            if c.config.pse.personalized:
                pipe.teacher(c.config)


def run_item(pipe: Any, plan: GridPlan, item: str) -> dict[str, Any]:
    """Evaluate one claimed item into the cache; returns the trial's user attributes."""
    if item == MIXTURE:
        rows = pipe.mixture_rows(plan.first)
        return {"n_rows": int(len(rows))}
    cfg = plan.cells[item].config
    log.info("%s: cell %s (%s)", worker_id(), item, describe(cfg)[:100])
    res = pipe.evaluate(cfg)
    return {"n_rows": int(len(res.rows)), "eval_key": str(res.info.get("eval_key", ""))}


def claim_and_run(study: Any, storage: Any, pipe: Any, plan: GridPlan) -> bool:
    """Claim one waiting item and evaluate it; False when nothing is waiting."""
    from optuna.trial import TrialState

    trial = pop_waiting(study, storage)
    if trial is None:
        return False
    item = plan.ids[trial.suggest_int(CLAIM, 0, len(plan.ids) - 1)]
    trial.set_user_attr("item", item)
    trial.set_user_attr("worker", worker_id())
    t0 = time.time()
    try:
        with heartbeat(storage, trial):
            attrs = run_item(pipe, plan, item)
    except KeyboardInterrupt:
        release(study, storage, trial)
        raise
    except Exception as exc:  # noqa: BLE001 - one bad cell must not lose the others (as in run_grid)
        log.error("cell %s failed: %s: %s", item, type(exc).__name__, exc)
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
        tell(study, trial, state=TrialState.FAIL)
        return True
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    tell(study, trial, values=time.time() - t0)
    return True


def release(study: Any, storage: Any, trial: Any) -> None:
    """An interrupted worker hands its claim back: the trial fails and a copy waits again."""
    import optuna

    if tell(study, trial, state=optuna.trial.TrialState.FAIL):
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        retry(study, storage.get_trial(trial._trial_id))


def work(study: Any, storage: Any, pipe: Any, plan: GridPlan, poll_s: float) -> int:
    """Claim and evaluate items until none is waiting or running (a running one may go stale and
    come back); returns how many this worker evaluated."""
    from optuna.trial import TrialState

    done = 0
    while True:
        fail_stale(study)
        if claim_and_run(study, storage, pipe, plan):
            done += 1
            continue
        if not count(study, TrialState.RUNNING, TrialState.WAITING):
            return done
        time.sleep(poll_s)


# --------------------------------------------------------------------------- the leaderboard
def finished(study: Any) -> dict[str, Any]:
    """Item -> its completed trial (the first, should a retried claim also have completed)."""
    from optuna.trial import TrialState

    done: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        done.setdefault(str(t.user_attrs.get("item")), t)
    return done


def failures(study: Any) -> dict[str, str]:
    """Item -> error, for items that failed and are neither finished nor waiting or running again."""
    from optuna.trial import TrialState

    live = {str(t.user_attrs.get("item")) for t in study.get_trials(deepcopy=False, states=(
        TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))}
    return {str(t.user_attrs.get("item")): str(t.user_attrs.get("error", "worker died")) for t in
            study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.user_attrs.get("item") not in live}


def load_cell(cache: Any, key: str, item: str, worker: str) -> Any:
    """A finished cell's rows and info, read from the (shared) cache."""
    import pandas as pd

    from bench.pipeline import CellResult

    if not key or not cache.is_done("eval", key):
        raise RuntimeError(f"cell {item} was finished by worker {worker}, but its results are not in this worker's "
                           f"cache {cache.root}: every worker must use one shared cache directory (--cache-dir)")
    return CellResult(pd.read_csv(cache.root / "eval" / key / "rows.csv"), cache.read_meta("eval", key))


def collect(pipe: Any, plan: GridPlan, done: dict[str, Any], common: dict[str, Any]) -> tuple[list, list, list]:
    """``per_utterance``, ``cells`` and ``trajectory`` rows of the finished items, in grid order."""
    per_utt: list = []
    cell_rows: list[dict] = []
    traj_rows: list[dict] = []
    for item in (i for i in plan.ids if i in done):
        if item == MIXTURE:
            rows = pipe.mixture_rows(plan.first).copy()
            cell_rows.append(mixture_cell_row(common))
        else:
            attrs = done[item].user_attrs
            res = load_cell(pipe.cache, str(attrs.get("eval_key", "")), item, str(attrs.get("worker", "?")))
            cfg = plan.cells[item].config
            rows = res.rows.copy()
            cell_rows.append(cell_row(cfg, item, res.info, cell_links(cfg, plan.cells), common))
            traj_rows.extend(trajectory_rows(item, cell_rows[-1], res.info))
        rows.insert(0, "cell_id", item)
        per_utt.append(rows)
    return per_utt, cell_rows, traj_rows


def _is_current(out: Path, study: str, done: dict[str, Any]) -> bool:
    """Whether ``out`` already holds the leaderboard of exactly these finished items."""
    import json

    try:
        prov = json.loads((out / "provenance.json").read_text())
    except (OSError, ValueError):
        return False
    return prov.get("study") == study and prov.get("finished") == sorted(done) and (out / "leaderboard.csv").is_file()


@dataclass
class BoardJob:
    """What writing a distributed grid's leaderboard needs besides the study."""

    name: str
    out: Path
    storage: str
    n_boot: int
    argv: list[str] | None
    grid_path: str
    figures: bool


def write_leaderboard(pipe: Any, plan: GridPlan, study: Any, job: BoardJob, common: dict[str, Any]) -> Any:
    """Write ``job.out`` from every finished item (one worker at a time: a file lock next to it);
    returns the leaderboard, or None when nothing is finished or ``out`` is already current. With
    failed items, a complete leaderboard in ``out`` is kept and this one goes beside it
    (``bench.output.place``)."""
    import shutil

    from filelock import FileLock

    from bench.output import lock_path, place
    from bench.report import write_json

    out = job.out
    with FileLock(str(lock_path(out))):
        done = finished(study)
        if not done or _is_current(out, plan.study, done):
            return None
        work = out.parent / f".{out.name}.partial-{worker_id().replace(':', '-')}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        per_utt, cell_rows, traj_rows = collect(pipe, plan, done, common)
        write_tables(work, per_utt, cell_rows, traj_rows)
        write_json(work / "provenance.json", {
            "grid": job.name, "grid_file": job.grid_path, "argv": job.argv, "cache_root": str(pipe.cache.root),
            "cells": len(plan.ids) - 1, "storage": redact(job.storage), "study": plan.study,
            "finished": sorted(done), "workers": sorted({str(t.user_attrs.get("worker")) for t in done.values()}),
            **common})
        board = write_board(work, job.name, per_utt, cell_rows, job.n_boot, common, job.argv, job.figures,
                            shown_as=out)
        placed = place(work, out, len(failures(study)))
    if placed != out:
        print(f"{out} holds a complete leaderboard and is kept; this one, with failed items, is in {placed}",
              file=sys.stderr)
    return board


# --------------------------------------------------------------------------- entry point
def connect(url: str, heartbeat_s: int) -> tuple[Any, str]:
    """The storage, or None and why it cannot be opened (missing driver, unreachable server)."""
    try:
        return open_storage(url, heartbeat_s), ""
    except ModuleNotFoundError as exc:
        hint = " (pip install -e .[scale])" if url.startswith("postgresql") else ""
        return None, f"--storage {redact(url)}: the database driver is not installed: {exc}{hint}"
    except Exception as exc:  # noqa: BLE001 - sqlalchemy's errors (bad URL, refused connection, ...)
        return None, f"--storage {redact(url)}: cannot open the study storage: {type(exc).__name__}: {exc}"


def open_existing(storage: Any, plan: GridPlan) -> Any:
    """The grid's study for ``--board-only`` (None when no worker has started it)."""
    import optuna

    try:
        return optuna.load_study(study_name=plan.study, storage=storage)
    except KeyError:
        return None


def run_distributed(plan: GridPlan, job: BoardJob, progress: bool = True, heartbeat_s: int = 60,
                    board_only: bool = False) -> int:
    """One worker of a distributed grid (see the module docstring); returns the exit code."""
    from bench.cache import Cache, default_root
    from bench.data.validate import CorpusError
    from bench.output import ready
    from bench.pipeline import Pipeline
    from bench.report import provenance, summary_table
    from bench.runtime import pick_device, set_threads

    try:
        device = pick_device(plan.first.device)
    except (RuntimeError, ValueError) as exc:
        return fail(str(exc))
    set_threads()
    problem = ready(job.out)
    storage, why = connect(job.storage, heartbeat_s) if not problem else (None, problem)
    if storage is None:
        return fail(why)
    pipe = Pipeline(Cache(default_root(plan.first.cache_dir)), device=device, progress=progress)
    n = 0
    if board_only:
        study = open_existing(storage, plan)
        if study is None:
            return fail(f"no worker has started this grid in {redact(job.storage)} (study {plan.study!r})")
    else:
        try:
            prepare(pipe, plan)
        except (CorpusError, OSError, ValueError) as exc:
            return fail(str(exc))
        study = open_grid_study(storage, plan)
        log.info("%s: study %r in %s, %d items", worker_id(), plan.study, redact(job.storage), len(plan.ids))
        n = work(study, storage, pipe, plan, poll_s=min(5.0, max(0.5, heartbeat_s / 2)))
    board = write_leaderboard(pipe, plan, study, job, provenance(device))
    done, failed = finished(study), failures(study)
    print(f"\n== {job.name}: worker {worker_id()} evaluated {n}; {len(done)} of {len(plan.ids)} items finished ==")
    if board is not None:
        print(summary_table(board, "all"))
    print(f"leaderboard: {job.out / 'leaderboard.csv'}")
    if failed:
        print(f"\n{len(failed)} item(s) failed:", file=sys.stderr)
        for item, err in failed.items():
            print(f"  - {item}: {err}", file=sys.stderr)
        return EXIT_CELL_FAILED
    return 0
