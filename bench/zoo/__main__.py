"""``python -m bench.zoo build|add-students|add-teachers|verify|list``: train the zoo backbones a
grid uses and write their entries, ship its students or its in-suite trained teachers, check every
checksum, or list the entries (see :mod:`bench.zoo`)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.zoo import (
    STUDENTS,
    TEACHERS,
    ZooError,
    artifact_files,
    entries,
    entry_name,
    files_digest,
    folder,
    load_state,
    plan_build,
    sha256,
    student_entries,
    student_file,
    student_name,
    teacher_artifact,
    teacher_entries,
    teacher_name,
)

MAX_FILE_BYTES = 5 * 2**20  # the zoo lives in git: a few MB per file at most


def add(name: str, state_path: str | Path, info: dict[str, Any], cfg: Any, corpus: Any, teacher: Any,
        command: str, zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """Copy a trained backbone into the zoo as ``<name>.pt`` with its provenance ``<name>.json``."""
    import shutil

    from bench.pse.train import STAGE_VERSION, teacher_identity, training_slice
    from bench.report import git_commit, now

    d = folder(zoo_dir)
    d.mkdir(parents=True, exist_ok=True)
    dst = d / f"{name}.pt"
    shutil.copyfile(state_path, dst)
    rec: dict[str, Any] = {
        "name": name,
        "file": dst.name,
        "sha256": sha256(dst),
        "bytes": dst.stat().st_size,
        "stage_key": info["key"],
        "stage_version": STAGE_VERSION,
        "pse": training_slice(cfg.pse),
        "mix": vars(cfg.mix),
        "n_val": cfg.eval.n_val,
        "teacher": teacher_identity(cfg, teacher),
        "teacher_weights": getattr(teacher, "weights_origin", ""),
        "corpus": {"name": cfg.corpus.name, "size": cfg.corpus.size, "seed": cfg.corpus.seed, "key": corpus.key,
                   "content_sha256": _content_stamp(corpus)},
        "train_speakers": corpus.speakers("train"),
        "steps": info.get("steps"),
        "best_step": info.get("best_step"),
        "best_val_si_sdri": info.get("best_val_si_sdri"),
        "train_wall_s": info.get("wall_s"),
        "params": info.get("params"),
        "commit": git_commit(),
        "command": command,
        "date": now(),
    }
    from bench.cache import atomic_write_json

    atomic_write_json(d / f"{name}.json", rec)
    rec["_meta_path"] = str(d / f"{name}.json")
    return rec


def _content_stamp(corpus: Any) -> str:
    from bench.data.corpus import CONTENT_STAMP

    p = Path(getattr(corpus, "root", ".")) / CONTENT_STAMP
    return p.read_text().strip() if p.is_file() else ""


def _cells(args: argparse.Namespace) -> list[Any] | None:
    """The cells of ``args.grid`` with ``args.overrides``, only those of the teachers named by
    ``args.teachers`` when given (None after printing a bad config's or name's error), with the
    process's torch threads set."""
    from bench.config import ConfigError, Grid
    from bench.runtime import set_threads

    try:
        cells = Grid.load(args.grid, overrides=args.overrides).cells()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    only = [t for t in (getattr(args, "teachers", "") or "").split(",") if t]
    if only:
        have = sorted({c.config.teacher.name for c in cells})
        unknown = [t for t in only if t not in have]
        if unknown:
            print(f"error: --teachers {','.join(unknown)}: not a teacher of {args.grid}; choices: {', '.join(have)}",
                  file=sys.stderr)
            return None
        cells = [c for c in cells if c.config.teacher.name in only]
    set_threads()
    return cells


def _build(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bench.cache import Cache, default_root
    from bench.pipeline import Pipeline
    from bench.pse.train import stage_key

    cells = _cells(args)
    if cells is None:
        return 2
    pipe = None
    needed: dict[str, tuple[Any, str]] = {}  # entry name -> (training config, stage key)
    for c in cells:
        if c.config.pse.source != "zoo":
            continue
        if pipe is None:
            pipe = Pipeline(Cache(default_root(c.config.cache_dir)), device="cpu", progress=not args.no_progress)
        for pers in (True, False):  # every personalized backbone is compared with its non-personalized twin
            cfg = replace(c.config, pse=replace(c.config.pse, personalized=pers, source="train"))
            key = stage_key(cfg, pipe.corpus(cfg), pipe.teacher(cfg))
            needed.setdefault(entry_name(cfg, key), (cfg, key))
    if not needed or pipe is None:
        print(f"error: no cell of {args.grid} uses pse.source=zoo", file=sys.stderr)
        return 2
    names, skipped = plan_build({name: key for name, (_, key) in needed.items()}, args.zoo_dir, force=args.force)
    for name, why in skipped.items():
        print(f"{name}: skipped, {why}")
    todo = {name: needed[name] for name in names}
    if not todo:
        return 0
    from bench.config import Cell
    from bench.grid import prefetch

    prefetch(pipe, [Cell(config=c, axes={}) for c, _ in todo.values()], workers=2, progress=not args.no_progress)
    for name, (cfg, key) in todo.items():
        t0 = time.time()
        _, info = pipe.pse(cfg)
        state = pipe.cache.stage_dir("pse", key) / "model.pt"
        rec = add(name, state, {**info, "key": key}, cfg, pipe.corpus(cfg), pipe.teacher(cfg),
                  " ".join(["python -m bench.zoo", *args.argv]),
                  zoo_dir=args.zoo_dir)
        print(f"{name}: {rec['steps']} steps, {rec['train_wall_s']:.0f} s of training, "
              f"val SI-SDRi {rec['best_val_si_sdri']:.2f} dB, sha256 {rec['sha256'][:16]} ({time.time() - t0:.0f} s)")
    return 0


def _kept(name: str, rec: dict[str, Any] | None, check: Any, prefix: str) -> bool:
    """Whether the zoo already holds entry ``rec`` intact (``check(rec)`` raises ZooError when not),
    saying so; a damaged one is said to be written again."""
    if rec is None:
        return False
    try:
        check(rec)
    except ZooError as exc:
        print(f"{name}: {exc}; writing it again")
        return False
    print(f"{name}: skipped, in the zoo as {prefix}{rec['file']}; --force rewrites it")
    return True


def _add_students(args: argparse.Namespace) -> int:
    """Ship the students a grid's cells use (trained here when the cache lacks them) in
    ``zoo/students/``; an entry already there under the same key with an intact checksum is kept
    unless ``--force``."""
    import shutil

    from bench.cache import Cache, atomic_write_json, default_root
    from bench.distill import STAGE, distill_key
    from bench.losses import distill_slice
    from bench.pipeline import Pipeline
    from bench.readings import student_reading, teacher_reading
    from bench.refine import uses_student
    from bench.report import git_commit, now

    cells = _cells(args)
    if cells is None:
        return 2
    have = student_entries(args.zoo_dir)
    d = folder(args.zoo_dir) / STUDENTS
    pipe, done = None, set()
    for c in cells:
        if not (uses_student(c.config) or student_reading(c.config)):
            continue
        cfg = teacher_reading(c.config)
        pipe = pipe or Pipeline(Cache(default_root(cfg.cache_dir)), device="cpu", progress=not args.no_progress)
        corpus, teacher = pipe.corpus(cfg), pipe.teacher(cfg)
        key = distill_key(cfg, corpus, teacher, pipe._enhancer(cfg), pipe.device)
        if key in done:
            continue
        done.add(key)
        name = student_name(cfg, key)
        if not args.force and _kept(name, have.get(key), student_file, ""):
            continue
        _, info = pipe.student(cfg)
        d.mkdir(parents=True, exist_ok=True)
        dst = d / f"{name}.pt"
        shutil.copyfile(pipe.cache.stage_dir(STAGE, key) / "student.pt", dst)
        keep = ("steps", "best_step", "stopped_early", "wall_s", "val_loss", "val_agreement", "val_mean_cos_student",
                "val_mean_cos_teacher", "params", "map", "map_size", "val_agreement_loss_space", "teacher", "loss",
                "inputs", "n_train_windows", "n_val_windows")
        rec = {"name": name, "file": dst.name, "sha256": sha256(dst), "bytes": dst.stat().st_size, "stage_key": key,
               "student": vars(cfg.student), "distill": distill_slice(cfg.distill), "seed": cfg.seed,
               "teacher": teacher.identity, "teacher_weights": teacher.weights_origin,
               "corpus": {"name": cfg.corpus.name, "size": cfg.corpus.size, "seed": cfg.corpus.seed, "key": corpus.key},
               "info": {k: info[k] for k in keep if k in info}, "trained_by": info.get("source", "trained"),
               "commit": git_commit(), "command": " ".join(["python -m bench.zoo", *args.argv]), "date": now()}
        atomic_write_json(d / f"{name}.json", rec)
        print(f"{name}: {info.get('steps')} steps, {float(info.get('wall_s') or 0):.0f} s of training, "
              f"sha256 {rec['sha256'][:16]}")
    if pipe is None:
        print(f"error: no cell of {args.grid} uses a student", file=sys.stderr)
        return 2
    return 0


def add_teacher(src: Path, tc: Any, key: str, teacher: Any, info: dict[str, Any], corpus: dict[str, Any],
                command: str, zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """Copy a trained teacher's artifact ``src`` (a file or a library folder) into the zoo as
    ``teachers/<name>/<artifact>`` with its provenance ``teachers/<name>.json`` (every file's
    SHA-256, the recipe ``tc``, the training ``info``, identity, corpus, command)."""
    import shutil

    from bench.cache import atomic_write_json
    from bench.config import TEACHER_ADDED_FIELDS
    from bench.report import git_commit, now

    name = teacher_name(tc.name, tc, key)
    big = {p.name: p.stat().st_size for p in ([src] if src.is_file() else src.rglob("*"))
           if p.is_file() and p.stat().st_size > MAX_FILE_BYTES}
    if big:
        raise ZooError(f"{name}: " + ", ".join(f"{k} is {v / 2**20:.1f} MiB" for k, v in sorted(big.items()))
                       + f", over the zoo's {MAX_FILE_BYTES / 2**20:.0f} MiB per file (git holds the zoo); "
                       "it stays in the cache, trained where it is used")
    d = folder(zoo_dir) / TEACHERS
    dst_dir = d / name
    if dst_dir.exists():
        shutil.rmtree(dst_dir)
    dst_dir.mkdir(parents=True)
    dst = dst_dir / src.name
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    files = artifact_files(dst)
    recipe = {k: getattr(tc, k) for k in ("name", "train_size", "train_steps", *TEACHER_ADDED_FIELDS)}
    rec = {"name": name, "file": f"{name}/{src.name}", "files": files, "sha256": files_digest(files),
           "bytes": sum((dst_dir / rel).stat().st_size for rel in files), "stage_key": key, "teacher": recipe,
           "identity": teacher.identity, "teacher_weights": teacher.weights_origin,
           "params": int(sum(p.numel() for p in teacher.parameters())), "corpus": corpus,
           "info": {k: v for k, v in info.items() if k not in ("source", "zoo_entry")},
           "commit": git_commit(), "command": command, "date": now()}
    atomic_write_json(d / f"{name}.json", rec)
    rec["_meta_path"] = str(d / f"{name}.json")
    return rec


def _add_teachers(args: argparse.Namespace) -> int:
    """Ship the in-suite trained teachers (``teacher.source: trained``) a grid's cells use (trained
    here when the cache lacks them) in ``zoo/teachers/``; an entry already there under the same
    training key with intact checksums is kept unless ``--force``."""
    from dataclasses import replace

    from bench.cache import Cache, default_root
    from bench.pipeline import Pipeline
    from bench.teachers._train import trained_key

    cells = _cells(args)
    if cells is None:
        return 2
    have = teacher_entries(args.zoo_dir)
    pipe, done = None, set()
    for c in cells:
        tc = c.config.teacher
        if tc.source != "trained":
            continue
        # what the zoo ships is what training here makes, never the zoo's own copy
        cfg = replace(c.config, teacher=replace(tc, train_source="train"))
        pipe = pipe or Pipeline(Cache(default_root(cfg.cache_dir)), device="cpu", progress=not args.no_progress)
        corpus = pipe.corpus(cfg)
        key = trained_key(tc.name, tc, corpus.key)
        if key in done:
            continue
        done.add(key)
        name = teacher_name(tc.name, tc, key)
        if not args.force and _kept(name, have.get(key), teacher_artifact, f"{TEACHERS}/"):
            continue
        t0 = time.time()
        teacher = pipe.teacher(cfg)  # train_source=train: a cached copy of the zoo's is trained again
        info = pipe.cache.read_meta("teacher", key)
        stage = pipe.cache.stage_dir("teacher", key)
        arts = [p for p in stage.iterdir() if p.name not in ("DONE", "ckpt.pt") and not p.name.startswith(".")]
        if len(arts) != 1:
            print(f"error: {stage} holds {sorted(p.name for p in arts)}, not one teacher artifact", file=sys.stderr)
            return 1
        corpus_desc = {"name": cfg.corpus.name, "size": cfg.corpus.size, "seed": cfg.corpus.seed, "key": corpus.key}
        try:
            rec = add_teacher(arts[0], tc, key, teacher, info, corpus_desc,
                              " ".join(["python -m bench.zoo", *args.argv]), zoo_dir=args.zoo_dir)
        except ZooError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {info.get('steps')} steps, {float(info.get('wall_s') or 0):.0f} s of training, "
              f"val EER {100 * float(info.get('val_eer', float('nan'))):.1f} %, sha256 {rec['sha256'][:16]} "
              f"({time.time() - t0:.0f} s)")
    if pipe is None:
        print(f"error: no cell of {args.grid} uses a teacher with source=trained", file=sys.stderr)
        return 2
    return 0


def _verify(args: argparse.Namespace) -> int:
    bad = 0
    for rec in entries(args.zoo_dir).values():
        try:
            load_state(rec, args.zoo_dir)
            print(f"ok   {rec['file']} {rec['sha256'][:16]} ({rec['steps']} steps, commit {rec['commit']})")
        except ZooError as exc:
            bad += 1
            print(f"FAIL {exc}")
    for rec in student_entries(args.zoo_dir).values():
        try:
            student_file(rec)
            print(f"ok   {STUDENTS}/{rec['file']} {rec['sha256'][:16]} ({rec['info'].get('steps')} steps, "
                  f"commit {rec['commit']})")
        except ZooError as exc:
            bad += 1
            print(f"FAIL {exc}")
    for rec in teacher_entries(args.zoo_dir).values():
        try:
            teacher_artifact(rec)
            n = len(rec["files"])
            print(f"ok   {TEACHERS}/{rec['file']} {rec['sha256'][:16]} ({n} file{'s' * (n != 1)}, "
                  f"{rec['info'].get('steps')} steps, commit {rec['commit']})")
        except ZooError as exc:
            bad += 1
            print(f"FAIL {exc}")
    return 1 if bad else 0


def _list(args: argparse.Namespace) -> int:
    for key, rec in entries(args.zoo_dir).items():
        print(f"{rec['file']}: key {key}, {rec['params']} params, {rec['steps']} steps in {rec['train_wall_s']:.0f} s, "
              f"val SI-SDRi {rec['best_val_si_sdri']:.2f} dB, corpus {rec['corpus']['content_sha256'][:12]}, "
              f"teacher {rec['teacher_weights'] or rec['teacher']}")
    for key, rec in student_entries(args.zoo_dir).items():
        i = rec.get("info", {})
        print(f"{STUDENTS}/{rec['file']}: key {key}, {i.get('params')} params, {i.get('steps')} steps, "
              f"val agreement {float(i.get('val_agreement', float('nan'))):.3f}, teacher {rec['teacher']}")
    for key, rec in teacher_entries(args.zoo_dir).items():
        i = rec.get("info", {})
        print(f"{TEACHERS}/{rec['file']}: key {key}, {rec.get('params')} params, {i.get('steps')} steps in "
              f"{float(i.get('wall_s') or 0):.0f} s, val EER {100 * float(i.get('val_eer', float('nan'))):.1f} %")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zoo", description="Build, verify or list the model zoo.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the zoo backbones a grid uses and write their entries")
    b.add_argument("--grid", default="ablations/losses.yaml")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--force", action="store_true",
                   help="retrain every backbone, also those the zoo already holds with an intact checksum")
    a = sub.add_parser("add-students", help="ship the students a grid uses in zoo/students/")
    a.add_argument("--grid", default="ablations/losses.yaml")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("--force", action="store_true", help="rewrite entries the zoo already holds intact")
    a.add_argument("--zoo-dir", default=None)
    t = sub.add_parser("add-teachers", help="ship the in-suite trained teachers a grid uses in zoo/teachers/")
    t.add_argument("--grid", default="ablations/teachers.yaml")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--force", action="store_true", help="rewrite entries the zoo already holds intact (a teacher the cache holds, trained here, is not trained again)")
    t.add_argument("--zoo-dir", default=None)
    for name in ("verify", "list"):
        sub.add_parser(name).add_argument("--zoo-dir", default=None)
    b.add_argument("--zoo-dir", default=None)
    for q in (b, a, t):
        q.add_argument("--teachers", default="", metavar="NAMES",
                       help="only the cells of these teachers (comma-separated names, e.g. ecapa,titanet)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded as the entry's command
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return {"build": _build, "add-students": _add_students, "add-teachers": _add_teachers,
            "verify": _verify, "list": _list}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
