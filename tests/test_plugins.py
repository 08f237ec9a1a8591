"""Users' plugins from outside the package: the examples/ package installs, registers through its
entry point and runs a grid whose backbone and student are its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pse_kd_example_plugins"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True)
    for junk in ("build",):  # setuptools builds in the source tree
        p = EXAMPLE / junk
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
    return target


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_entry_point_registers_the_plugins(site):
    code = ("from bench import registry; print(sorted(set(registry.names('pse')) | set(registry.names('student'))))")
    out = subprocess.run([sys.executable, "-c", code], env=_env(site), capture_output=True, text=True, check=True)
    assert "maskgru" in out.stdout and "meanmel" in out.stdout
    # without the package the names are unknown, and a grid naming them is a clear error
    out = subprocess.run([sys.executable, "-m", "bench.run", "--grid", str(EXAMPLE / "example.yaml"), "--dry-run"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and ("maskgru" in out.stderr or "meanmel" in out.stderr)
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_example_grid_runs_with_the_users_backbone_and_student(site, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.run", "--grid", str(EXAMPLE / "example.yaml"), "--out", str(out),
           "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--no-figures"]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(site), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    board = pd.read_csv(out / "leaderboard.csv")
    assert board["pse"].dropna().str.startswith("maskgru/").all()
    stu = board[board["system"] == "student-mse"]
    assert len(stu) and (stu["student_params"] > 0).all() and stu["d_si_sdr_mean"].notna().all()


def test_plugins_option_imports_a_module(site, tmp_path, capsys):
    from bench import run

    assert run.main(["--grid", str(EXAMPLE / "example.yaml"), "--plugins", "no_such_plugin_module", "--dry-run"]) == 2
    assert "no_such_plugin_module" in capsys.readouterr().err
