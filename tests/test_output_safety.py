"""The results folder: nothing outside it is written, a folder that is not the suite's is never
replaced, a run with failed cells never replaces a complete leaderboard, one run writes a folder
at a time, and a folder that cannot be replaced is found before anything is computed.

The grid runs here evaluate nothing: ``fake_cells`` stands in for the corpora, the mixture and
the cells (a few rows each), so every test takes a second or two."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import output, run

ROOT = Path(__file__).resolve().parents[1]
GRID = """\
name: {name}
base:
  corpus: {{name: embedded, size: smoke}}
  pse: {{source: train, size: tiny}}
  eval: {{n_test: 4, n_stream: 4, n_val: 4, conditions: [clean], n_bootstrap: 20, workers: 1}}
systems:
  - {{baseline: static}}
"""


class Computed(Exception):
    """Raised where a run would start computing."""


@pytest.fixture
def no_compute(monkeypatch):
    """A run that gets as far as loading the corpora raises ``Computed``."""
    def refuse(*_a, **_k):
        raise Computed

    monkeypatch.setattr(run, "_load_corpora", refuse)


def _rows(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"condition": "clean", "utt": np.arange(4), "si_sdr": rng.normal(5, 1, 4),
                         "si_sdri": rng.normal(3, 1, 4)})


@pytest.fixture
def fake_cells(monkeypatch):
    """Corpora, mixture and cells without computing; ``fail`` holds the refine names whose cells
    raise (``"*"``: every cell), ``gate`` an event every cell waits on (when set to one)."""
    from bench.pipeline import CellResult, Pipeline

    state: dict = {"fail": set(), "gate": None}

    def evaluate(self, cfg):
        if state["gate"] is not None:
            state["gate"].wait(10)
        if "*" in state["fail"] or cfg.refine.name in state["fail"]:
            raise RuntimeError(f"{cfg.refine.name} broke")
        return CellResult(_rows(len(cfg.refine.name)), {})

    monkeypatch.setattr(run, "_load_corpora", lambda *a, **k: "")
    monkeypatch.setattr(Pipeline, "mixture_rows", lambda self, cfg: _rows(0))
    monkeypatch.setattr(Pipeline, "evaluate", evaluate)
    return state


def _grid(tmp_path: Path, name: str = "tiny") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(GRID.format(name=name))
    return str(path)


def _main(grid: str, out: Path | None, tmp_path: Path, *extra: str) -> int:
    args = ["--grid", grid, "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--no-figures", *extra]
    return run.main(args + (["--out", str(out)] if out is not None else []))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- what may be replaced
@pytest.mark.parametrize("name", ["../../../elsewhere", "/tmp/elsewhere", "a/b", ".hidden", ".."])
def test_grid_name_that_is_a_path_is_refused_and_nothing_written(name, tmp_path, monkeypatch, capsys, no_compute):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID.format(name=json.dumps(name)))
    before = sorted(p for p in tmp_path.rglob("*"))
    assert _main(str(grid), None, tmp_path) == 2
    assert repr(name) in _one_error_line(capsys)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_user_folder_as_out_is_never_replaced(tmp_path, capsys, no_compute):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("four years")
    assert _main(_grid(tmp_path), mine, tmp_path) == 2
    assert "not a results folder" in _one_error_line(capsys)
    assert (mine / "thesis.txt").read_text() == "four years"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "tiny.yaml"]


def test_dry_run_refuses_a_user_folder_too(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("x")
    assert _main(_grid(tmp_path), mine, tmp_path, "--dry-run") == 2
    assert str(mine) in _one_error_line(capsys)


def test_file_as_out_is_refused_untouched(tmp_path, capsys, no_compute):
    f = tmp_path / "results.txt"
    f.write_text("keep")
    assert _main(_grid(tmp_path), f, tmp_path) == 2
    assert "is a file" in _one_error_line(capsys)
    assert f.read_text() == "keep" and not (tmp_path / ".results.txt.previous").exists()


def test_results_folder_with_a_users_file_is_refused(tmp_path, capsys, fake_cells):
    grid, out = _grid(tmp_path), tmp_path / "res"
    assert _main(grid, out, tmp_path) == 0
    (out / "README.md").write_text("my notes")
    assert _main(grid, out, tmp_path) == 2
    assert "README.md" in _one_error_line(capsys)
    assert (out / "README.md").read_text() == "my notes"


def test_results_folder_and_empty_folder_are_replaced(tmp_path, fake_cells):
    grid, out = _grid(tmp_path), tmp_path / "res"
    out.mkdir()
    assert _main(grid, out, tmp_path) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["failed_cells"] == 0 and "leaderboard.csv" in prov["outputs"]
    assert _main(grid, out, tmp_path) == 0  # its own folder: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == [".res.lock", "cache", "res", "tiny.yaml"]


def test_swap_in_refuses_a_foreign_folder(tmp_path):
    work, out = tmp_path / ".x.partial", tmp_path / "x"
    work.mkdir()
    out.mkdir()
    (out / "thesis.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a results folder"):
        output.swap_in(work, out)
    assert (out / "thesis.txt").read_text() == "keep"


def test_a_foreign_folder_under_the_partial_name_is_not_removed(tmp_path, capsys, no_compute):
    out = tmp_path / "res"
    (tmp_path / ".res.partial").mkdir()
    (tmp_path / ".res.partial" / "data.bin").write_text("keep")
    assert _main(_grid(tmp_path), out, tmp_path) == 2
    assert "in the way" in _one_error_line(capsys)
    assert (tmp_path / ".res.partial" / "data.bin").read_text() == "keep"


def test_out_through_a_link_replaces_the_target_and_keeps_the_link(tmp_path, fake_cells):
    grid, real, link = _grid(tmp_path), tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    assert _main(grid, link, tmp_path) == 0
    assert link.is_symlink() and (real / "leaderboard.csv").is_file()


# --------------------------------------------------------------------------- failed cells
def test_rerun_whose_cells_all_fail_keeps_the_complete_leaderboard(tmp_path, capsys, fake_cells):
    grid, out = _grid(tmp_path), tmp_path / "res"
    assert _main(grid, out, tmp_path) == 0
    before = _tree(out)
    fake_cells["fail"].add("*")
    assert _main(grid, out, tmp_path) == 1
    assert "no cell completed" in capsys.readouterr().err
    assert _tree(out) == before
    assert not list(tmp_path.glob("res.failed-*"))


def test_rerun_with_a_failed_cell_writes_beside_a_complete_leaderboard(tmp_path, capsys, fake_cells):
    grid, out = _grid(tmp_path), tmp_path / "res"
    assert _main(grid, out, tmp_path) == 0
    before = _tree(out)
    fake_cells["fail"].add("oracle_clean")
    assert _main(grid, out, tmp_path) == 1
    err = capsys.readouterr().err
    assert _tree(out) == before
    [beside] = tmp_path.glob("res.failed-*")
    assert f"{out} holds a complete leaderboard and is kept" in err and str(beside) in err
    board = pd.read_csv(beside / "leaderboard.csv")
    assert "oracle_clean" not in set(board["system"]) and "static" in set(board["system"])
    assert json.loads((beside / "provenance.json").read_text())["failed_cells"] == 1
    # the folder with failed cells does not stop the next complete run from replacing the results
    fake_cells["fail"].clear()
    assert _main(grid, out, tmp_path) == 0


def test_run_with_failed_cells_replaces_an_incomplete_earlier_one(tmp_path, fake_cells):
    grid, out = _grid(tmp_path), tmp_path / "res"
    fake_cells["fail"].add("oracle_clean")
    assert _main(grid, out, tmp_path) == 1  # nothing earlier: written in place
    assert json.loads((out / "provenance.json").read_text())["failed_cells"] == 1
    fake_cells["fail"] = {"oracle_enroll_clean"}
    assert _main(grid, out, tmp_path) == 1  # the earlier one was no better: replaced
    assert "oracle_clean" in set(pd.read_csv(out / "leaderboard.csv")["system"])
    assert not list(tmp_path.glob("res.failed-*"))


def test_place_keeps_a_complete_folder_from_before_the_failure_record(tmp_path):
    out, work = tmp_path / "res", tmp_path / ".res.partial"
    for d in (out, work):
        d.mkdir()
        (d / "provenance.json").write_text(json.dumps({"grid": "res"}))  # no failed_cells: an older run
        (d / "leaderboard.csv").write_text(d.name)
    dest = output.place(work, out, failed=2)
    assert dest.parent == tmp_path and dest.name.startswith("res.failed-")
    assert (out / "leaderboard.csv").read_text() == "res" and (dest / "leaderboard.csv").read_text() == ".res.partial"


def test_a_swap_cut_short_is_restored(tmp_path, fake_cells):
    grid, out = _grid(tmp_path), tmp_path / "res"
    assert _main(grid, out, tmp_path) == 0
    before = _tree(out)
    out.rename(output.previous_dir(out))  # died between the two renames
    fake_cells["fail"].add("*")
    assert _main(grid, out, tmp_path) == 1
    assert _tree(out) == before and not output.previous_dir(out).exists()


# --------------------------------------------------------------------------- one run at a time
def test_second_run_on_a_locked_folder_is_refused(tmp_path, capsys, no_compute):
    from filelock import FileLock

    out = tmp_path / "res"
    with FileLock(str(output.lock_path(out))):
        assert _main(_grid(tmp_path), out, tmp_path) == 2
    assert "another run is writing" in _one_error_line(capsys)


def test_two_runs_at_once_leave_one_complete_leaderboard(tmp_path, fake_cells):
    grid, out = _grid(tmp_path), tmp_path / "res"
    fake_cells["gate"] = gate = threading.Event()  # the first run's cells wait for the second to finish
    codes: list[int] = []
    first = threading.Thread(target=lambda: codes.append(_main(grid, out, tmp_path)))
    first.start()
    for _ in range(200):
        if output.partial_dir(out).is_dir():
            break
        time.sleep(0.05)
    second = _main(grid, out, tmp_path)
    gate.set()
    first.join(30)
    assert second == 2 and codes == [0]
    assert (out / "leaderboard.csv").is_file() and not output.previous_dir(out).exists()
    assert {"static", "oracle_clean", "mixture"} <= set(pd.read_csv(out / "leaderboard.csv")["system"])


# --------------------------------------------------------------------------- cannot be replaced
def _chattr(flag: str, path: Path) -> bool:
    if not shutil.which("chattr"):
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def test_immutable_out_is_found_before_computing(tmp_path, capsys, fake_cells, monkeypatch):
    grid, out = _grid(tmp_path), tmp_path / "res"
    assert _main(grid, out, tmp_path) == 0
    if not _chattr("+i", out):
        pytest.skip("chattr +i is not available here")
    try:
        monkeypatch.setattr(run, "_load_corpora", lambda *a, **k: (_ for _ in ()).throw(Computed()))
        assert _main(grid, out, tmp_path) == 2
        assert "cannot replace the results" in _one_error_line(capsys)
    finally:
        _chattr("-i", out)


def test_read_only_out_is_found_before_computing(tmp_path, capsys, fake_cells, monkeypatch):
    grid, out = _grid(tmp_path), tmp_path / "res"
    assert _main(grid, out, tmp_path) == 0
    os.chmod(out, 0o500)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        monkeypatch.setattr(run, "_load_corpora", lambda *a, **k: (_ for _ in ()).throw(Computed()))
        assert _main(grid, out, tmp_path) == 2
        assert "cannot replace the results" in _one_error_line(capsys)
    finally:
        os.chmod(out, 0o700)


def test_read_only_folder_inside_out_is_found(tmp_path, monkeypatch):
    out = tmp_path / "res"
    (out / "figures").mkdir(parents=True)
    real = os.access

    def access(path, mode, **kw):
        return False if Path(path) == out / "figures" and mode & os.W_OK else real(path, mode, **kw)

    monkeypatch.setattr(output.os, "access", access)
    assert "figures is read-only" in output.replaceable(out)
