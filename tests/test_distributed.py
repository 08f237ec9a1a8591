"""Many workers, one grid or sweep, over a real PostgreSQL server on loopback.

The server is Debian's ``postgresql`` (``scripts/apt-packages.txt``), started per module in a
temporary folder on a free port; PostgreSQL refuses to run as root, so as root it runs as the
``postgres`` user (``runuser``). Each test gets a database of its own. The tests skip, saying
why, when the server binaries, an unprivileged user or the ``psycopg`` driver are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "ablations" / "smoke.yaml"
PROBE = "tests._stage_probe"


# --------------------------------------------------------------------------- the server
def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _as_server_user() -> list[str] | None:
    """The command prefix that runs the server as an unprivileged user (None: impossible)."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_server():
    """``(admin URL, URL template)`` of a PostgreSQL server on 127.0.0.1, stopped at teardown."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed (pip install -e .[scale])")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    prefix = _as_server_user()
    if prefix is None:
        pytest.skip("running as root without a 'postgres' user and runuser: PostgreSQL refuses to run as root")
    tmp = Path(tempfile.mkdtemp(prefix="pse-kd-pg-"))
    if prefix:
        shutil.chown(tmp, "postgres")
    data, port = tmp / "data", _free_port()
    run = [*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "bench", "--no-sync", "-E", "UTF8"]
    subprocess.run(run, check=True, capture_output=True)
    ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log")]
    opts = f"-p {port} -h 127.0.0.1 -k {tmp} -c fsync=off -c max_connections=100"
    subprocess.run([*ctl, "-o", opts, "-w", "-t", "60", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://bench@127.0.0.1:{port}"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server, request):
    """A fresh database on the module's server for each test."""
    import psycopg

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    with psycopg.connect(pg_server.replace("postgresql+psycopg", "postgresql") + "/postgres",
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{pg_server}/{name}"


# --------------------------------------------------------------------------- the grid
def _tiny_grid(path: Path) -> str:
    """The smoke grid's base, cut down: one backbone, one student, one condition; static and one
    refining student, plus the references, control and ceiling every grid gets (7 items)."""
    grid = yaml.safe_load(SMOKE.read_text())
    base = grid["base"]
    base["pse"].update(train_steps=20, val_every=10)
    base["distill"].update(steps=20, val_every=10)
    base["eval"].update(n_test=2, n_stream=2, n_val=2, conditions=["clean"], n_bootstrap=50)
    grid.update(name="dist", systems=[{"baseline": "static"},
                                      {"refine.name": "ema", "distill.loss": "mse", "refine.alpha": 0.5}])
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return str(path)


def _env(stage_log: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PSE_KD_STAGE_LOG": str(stage_log), "PSE_KD_WORKERS": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT), **extra}


def _worker(grid: str, url: str, cache: Path, out: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench.run", "--grid", grid, "--storage", url, "--cache-dir", str(cache),
           "--out", str(out), "--no-progress", "--no-figures", "--heartbeat", "1", "--plugins", PROBE]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill(p: subprocess.Popen) -> None:
    """SIGKILL a worker and whatever it started (its own session)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def _wait(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 900) -> None:
    """Wait for every worker; each must exit 0. None is left running, whatever happens."""
    try:
        for p, log in zip(procs, logs, strict=True):
            assert p.wait(timeout=timeout) == 0, log.read_text()[-4000:]
    finally:
        for p in procs:
            _kill(p)


def _plan(grid: str):
    from bench.config import Grid
    from bench.distributed import make_plan
    from bench.grid import with_baselines

    g = Grid.load(grid)
    return make_plan(g.name, with_baselines(g.cells()))


def _study(url: str, grid: str):
    """The grid's study (KeyError until a worker has created it)."""
    import optuna

    from bench.distributed import quiet_optuna

    quiet_optuna()
    return optuna.load_study(study_name=_plan(grid).study, storage=url)


def _expected_items(grid: str) -> list[str]:
    return _plan(grid).ids


def _check_board(out: Path, items: list[str]) -> None:
    cells = pd.read_csv(out / "cells.csv")
    per = pd.read_csv(out / "per_utterance.csv")
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(cells["cell_id"]) == sorted(items) and cells["cell_id"].is_unique
    assert set(per["cell_id"]) == set(items)
    assert not per.duplicated(["cell_id", "condition", "utt"]).any()
    systems = set(cells.loc[cells["cell_id"] != "mixture", "system"])
    assert systems <= set(board["system"]) and len(systems) == len(items) - 1


@pytest.mark.slow
def test_two_workers_run_every_cell_once(pg_url, tmp_path):
    from optuna.trial import TrialState

    grid = _tiny_grid(tmp_path / "dist.yaml")
    cache, out, stages = tmp_path / "cache", tmp_path / "out", tmp_path / "stages.log"
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    procs = [_worker(grid, pg_url, cache, out, _env(stages), log) for log in logs]
    _wait(procs, logs)

    items = _expected_items(grid)
    trials = _study(pg_url, grid).get_trials(deepcopy=False)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    claimed = Counter(t.user_attrs["item"] for t in trials)
    assert sorted(claimed) == sorted(items) and set(claimed.values()) == {1}  # every cell ran exactly once
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took cells
    computed = Counter(tuple(line.split()[:2]) for line in stages.read_text().splitlines())
    assert computed and max(computed.values()) == 1, [k for k, n in computed.items() if n > 1]
    assert {s for s, _ in computed} >= {"pse", "student", "eval"}
    _check_board(out, items)
    # any worker can (re)write the leaderboard of what is finished, without claiming anything
    shutil.rmtree(out)
    cmd = [sys.executable, "-m", "bench.run", "--grid", grid, "--storage", pg_url, "--cache-dir", str(cache),
           "--out", str(out), "--no-progress", "--no-figures", "--board-only"]
    assert subprocess.run(cmd, cwd=ROOT, env=_env(stages), capture_output=True).returncode == 0
    _check_board(out, items)


@pytest.mark.slow
def test_killed_worker_leaves_its_cell_to_the_other(pg_url, tmp_path):
    from optuna.trial import TrialState

    grid = _tiny_grid(tmp_path / "dist.yaml")
    cache, out, stages = tmp_path / "cache", tmp_path / "out", tmp_path / "stages.log"
    env = _env(stages, PSE_KD_SLOW_CELL_S="3")
    victim = _worker(grid, pg_url, cache, out, env, tmp_path / "victim.log")
    deadline = time.monotonic() + 600
    running = None
    while running is None and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.2)
        try:
            trials = _study(pg_url, grid).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except (ValueError, KeyError):  # no study yet
            continue
        running = next((t for t in trials if t.user_attrs.get("item", "mixture") != "mixture"), None)
    assert running is not None, (tmp_path / "victim.log").read_text()[-4000:]
    item = running.user_attrs["item"]
    _kill(victim)
    assert item not in {t.user_attrs.get("item") for t in
                        _study(pg_url, grid).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}

    logs = [tmp_path / "rescuer.log"]
    rescuer = _worker(grid, pg_url, cache, out, _env(stages), logs[0])
    _wait([rescuer], logs)
    trials = _study(pg_url, grid).get_trials(deepcopy=False)
    mine = [t for t in trials if t.user_attrs.get("item") == item]
    assert [t.state for t in mine] == [TrialState.FAIL, TrialState.COMPLETE]  # failed as stale, then retried
    assert mine[0].user_attrs["worker"] != mine[1].user_attrs["worker"]
    assert mine[1].user_attrs["worker"].endswith(f":{rescuer.pid}")
    items = _expected_items(grid)
    done = Counter(t.user_attrs["item"] for t in trials if t.state == TrialState.COMPLETE)
    assert sorted(done) == sorted(items) and set(done.values()) == {1}
    _check_board(out, items)


# --------------------------------------------------------------------------- the sweep
@pytest.mark.slow
def test_two_sweep_workers_share_one_total_budget(pg_url, tmp_path):
    import optuna

    grid = _tiny_grid(tmp_path / "dist.yaml")
    cache, stages = tmp_path / "cache", tmp_path / "stages.log"
    cmd = [sys.executable, "-m", "bench.sweep", "--grid", grid, "--set", f"cache_dir={cache}", "--set",
           "distill.loss=contrastive", "--param", "refine.alpha=0.0:1.0", "--param", "distill.tau=0.05:0.5:log",
           "--storage", pg_url, "--study", "budget", "--trials", "10", "--total-trials", "5", "--heartbeat", "1",
           "--no-progress"]
    logs = [tmp_path / "s0.log", tmp_path / "s1.log"]
    procs = [subprocess.Popen([*cmd, "--out", str(tmp_path / f"sweep{i}")], cwd=ROOT, env=_env(stages),
                              stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
             for i, log in enumerate(logs)]
    _wait(procs, logs)

    from bench.distributed import quiet_optuna

    quiet_optuna()
    trials = optuna.load_study(study_name="budget", storage=pg_url).get_trials(deepcopy=False)
    assert len(trials) == 5  # the total budget, over both workers
    assert all(t.state.is_finished() for t in trials)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= 2
    keys = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(keys)) == len(keys)  # no two trials share parameters


# --------------------------------------------------------------------------- claims and budgets, fast
def _claim_all(url: str, study_name: str, out: str) -> None:
    """A process that claims waiting trials until none is left, noting each claimed number."""
    import optuna

    from bench.distributed import open_storage, pop_waiting

    storage = open_storage(url, heartbeat_s=1)
    study = optuna.load_study(study_name=study_name, storage=storage)
    got = []
    while (trial := pop_waiting(study, storage)) is not None:
        got.append(trial.number)
        study.tell(trial, 0.0)
    Path(out).write_text(" ".join(map(str, got)))


def _budget_worker(url: str, total: int, seed: int, out: str) -> None:
    import optuna

    from bench.distributed import open_storage, run_budget

    storage = open_storage(url, heartbeat_s=1, retry=False)
    study = optuna.create_study(study_name="toy", storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True))

    def objective(trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        time.sleep(0.05)
        if x < 0.1:
            raise ValueError("a failing trial counts too")
        return x

    n = run_budget(study, storage, objective, total, 10**6, (ValueError,), lambda: None)
    Path(out).write_text(str(n))


def _spawn(target, args_list: list[tuple]) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0


def test_claims_are_exclusive_across_processes(pg_url, tmp_path):
    import optuna

    from bench.distributed import count, open_storage, quiet_optuna

    quiet_optuna()
    storage = open_storage(pg_url, heartbeat_s=1)
    study = optuna.create_study(study_name="claims", storage=storage)
    for i in range(40):
        study.enqueue_trial({"cell": i})
    outs = [str(tmp_path / f"c{i}.txt") for i in range(3)]
    _spawn(_claim_all, [(pg_url, "claims", o) for o in outs])
    got = [int(x) for o in outs for x in Path(o).read_text().split()]
    assert sorted(got) == list(range(40))  # each claimed by exactly one process
    assert count(study, optuna.trial.TrialState.COMPLETE) == 40


def test_total_budget_is_exact_over_workers(pg_url, tmp_path):
    import optuna

    from bench.distributed import quiet_optuna

    quiet_optuna()
    outs = [str(tmp_path / f"b{i}.txt") for i in range(3)]
    _spawn(_budget_worker, [(pg_url, 12, seed, o) for seed, o in enumerate(outs)])
    assert sum(int(Path(o).read_text()) for o in outs) == 12
    trials = optuna.load_study(study_name="toy", storage=pg_url).trials
    assert len(trials) == 12 and all(t.state.is_finished() for t in trials)
    xs = [t.params["x"] for t in trials]
    assert len(set(xs)) == len(xs)
    # a later worker with the same budget finds it spent; a larger budget tops the study up
    _spawn(_budget_worker, [(pg_url, 12, 7, outs[0])])
    assert Path(outs[0]).read_text() == "0"
    _spawn(_budget_worker, [(pg_url, 15, 8, outs[0])])
    assert Path(outs[0]).read_text() == "3" and len(optuna.load_study(study_name="toy", storage=pg_url).trials) == 15
