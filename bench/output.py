"""The results folder of a run: what may be replaced, where a run writes until it is complete,
and who may write it.

A run writes into ``.<name>.partial`` beside its results folder ``<name>`` and, once the
leaderboard is written, swaps it in (the old folder is renamed to ``.<name>.previous`` and only
removed once the new one is in). Beside ``<name>`` the suite writes nothing but these two folders,
the lock file ``.<name>.lock`` and, for a run with failed cells whose results folder holds a
complete leaderboard, ``<name>.failed-<date>-<time>``.

A folder is replaced only when it is a results folder of the suite: empty, or holding a run's
``provenance.json`` and nothing but the entries a run writes (those listed in ``RUN_ENTRIES``
and those the run that wrote it recorded in its ``provenance.json``). Anything else (a user's
folder, a file, a results folder the user added a file to) is refused before computing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The top-level entries a ``bench.run`` results folder holds.
RUN_ENTRIES = frozenset({
    "per_utterance.csv", "cells.csv", "trajectory.csv", "leaderboard.csv", "leaderboard.md", "provenance.json",
    "corpora.json", "REPORT.md", "report.html", "figures", "example",
})
MIN_FREE_MB = 20


def resolve_out(out: Path) -> Path:
    """``out`` with ``..`` and ``.`` folded, a link followed to its target (the folder that is
    replaced is the real one), and absolute when its name would otherwise be empty."""
    out = Path(os.path.normpath(out))
    if out.is_symlink():
        out = out.resolve()
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    return out


def partial_dir(out: Path) -> Path:
    """Where a run writes until it completes; then it is swapped in for ``out``."""
    return out.parent / f".{out.name}.partial"


def previous_dir(out: Path) -> Path:
    """Where the replaced results wait while the new ones are swapped in."""
    return out.parent / f".{out.name}.previous"


def lock_path(out: Path) -> Path:
    """The lock file of ``out``: one run (or one distributed worker's leaderboard) writes at a time."""
    return out.parent / f".{out.name}.lock"


def read_provenance(folder: Path) -> dict[str, Any] | None:
    """The ``provenance.json`` a run wrote in ``folder`` (None when there is none, or it is not a run's)."""
    try:
        prov = json.loads((folder / "provenance.json").read_text())
    except (OSError, ValueError):
        return None
    return prov if isinstance(prov, dict) and "grid" in prov else None


def _listing(names: list[str], n: int = 4) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def foreign_entries(folder: Path) -> list[str] | None:
    """The entries of ``folder`` a run did not write (None: it is not a run's folder at all, as it
    has no run's ``provenance.json``; [] for an empty folder or a clean results folder)."""
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return []
    prov = read_provenance(folder)
    if prov is None:
        return None
    recorded = prov.get("outputs")
    known = RUN_ENTRIES | (set(recorded) if isinstance(recorded, list) else set())
    return [n for n in names if n not in known]


def results_folder_problem(folder: Path) -> str:
    """Why the existing folder ``folder`` must not be replaced by a run's results ("" when it may)."""
    try:
        foreign = foreign_entries(folder)
    except OSError as exc:
        return f"cannot read {folder}: {exc.strerror or exc}"
    if foreign is None:
        names = sorted(p.name for p in folder.iterdir())
        return (f"{folder} is not a results folder of the suite (no provenance.json of a run; it holds "
                f"{_listing(names)}): it is never replaced; give a new or empty folder as --out")
    if foreign:
        return (f"{folder} holds {_listing(foreign)}, which no run wrote and which replacing the results would "
                f"remove: move it out, or give another --out")
    return ""


def _side_problem(side: Path) -> str:
    """Why the suite's own folder ``side`` (partial or previous) must not be removed ("" when it may)."""
    if not side.exists() and not side.is_symlink():
        return ""
    if side.is_symlink() or not side.is_dir() or (any(side.iterdir()) and read_provenance(side) is None):
        return f"{side} is in the way (the suite keeps unfinished results under that name) and is not the suite's: " \
               "move it away"
    return ""


def check_out(out: Path) -> str:
    """Why results cannot go to ``out`` ("" when they can), found without writing anything: it is a
    file, a mount point, or a folder that is not a results folder of the suite; or the suite's
    partial or previous folder beside it is something else."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder: give a folder (it is created when missing)"
    if out.is_dir():
        if os.path.ismount(out):
            return f"--out {out} is a mount point, which cannot be replaced: give a folder inside it"
        problem = results_folder_problem(out)
        if problem:
            return problem
    for side in (partial_dir(out), previous_dir(out)):
        problem = _side_problem(side)
        if problem:
            return problem
    return ""


def writable(folder: Path) -> str:
    """Why results cannot be written under ``folder`` ("" when they can): it is created when missing,
    then a file is made and removed in it, and its disk needs ``MIN_FREE_MB`` free."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return f"cannot write results under {folder}: {exc.strerror or exc}"
    if free < MIN_FREE_MB * 2**20:
        return f"cannot write results under {folder}: only {free / 2**20:.1f} MB free"
    return ""


def replaceable(out: Path) -> str:
    """Why the existing results folder ``out`` could not be replaced ("" when it can, or is missing):
    it or a folder in it is read-only (or immutable), so it could be neither renamed nor removed."""
    if not out.is_dir():
        return ""
    folders = [out, *(p for p in out.rglob("*") if p.is_dir() and not p.is_symlink())]
    for d in folders:
        if not os.access(d, os.W_OK | os.X_OK):
            return f"cannot replace the results in {out}: {d} is read-only"
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as exc:
        return f"cannot replace the results in {out}: {exc.strerror or exc}"
    return ""


def ready(out: Path) -> str:
    """Every check of ``out`` before computing: ``check_out``, then the parent writable with room,
    then ``out`` replaceable. "" when results can go there."""
    return check_out(out) or writable(out.parent) or replaceable(out)


@contextmanager
def output_lock(out: Path) -> Iterator[bool]:
    """Hold ``out``'s lock while the body runs; yields False (holding nothing) when another process
    holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path(out)), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def restore_previous(out: Path) -> bool:
    """After a run died between the two renames of a swap: put ``.<name>.previous`` back as ``out``.
    True when it did."""
    old = previous_dir(out)
    if out.exists() or not old.is_dir() or read_provenance(old) is None:
        return False
    old.rename(out)
    return True


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds the leaderboard of a run none of whose cells failed (a run that did
    not record its failures counts as complete)."""
    prov = read_provenance(folder)
    return prov is not None and (folder / "leaderboard.csv").is_file() and not prov.get("failed_cells")


def seal(work: Path, failed: int) -> None:
    """Record in ``work``'s provenance how many cells failed and the entries the run wrote."""
    from bench.report import write_json

    prov = read_provenance(work) or {}
    entries = sorted(p.name for p in work.iterdir() if p.name != "provenance.json")
    write_json(work / "provenance.json", {**prov, "failed_cells": failed, "outputs": entries + ["provenance.json"]})


def beside(out: Path) -> Path:
    """A new folder name beside ``out`` for a run that must not replace it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out.parent / f"{out.name}.failed-{stamp}"
    n = 2
    while path.exists():
        path = out.parent / f"{out.name}.failed-{stamp}-{n}"
        n += 1
    return path


def place(work: Path, out: Path, failed: int) -> Path:
    """Put the finished run folder ``work`` where it belongs and return where that is: ``out``, or,
    when cells failed and ``out`` holds a complete leaderboard, a new folder beside it (``beside``),
    so a worse run never replaces a complete one."""
    seal(work, failed)
    if failed and is_complete(out):
        dest = beside(out)
        work.rename(dest)
        return dest
    swap_in(work, out)
    return out


def swap_in(work: Path, out: Path) -> None:
    """Replace ``out`` by the completed ``work`` folder (the old one only goes once the new is in).
    ``out`` must pass ``check_out`` (checked again here: a folder that is not the suite's is refused
    with ValueError, never removed)."""
    problem = check_out(out)
    if problem:
        raise ValueError(problem)
    old = previous_dir(out)
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    work.rename(out)
    if old.exists():
        shutil.rmtree(old)
