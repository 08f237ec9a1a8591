"""``python -m bench.zoo build|verify|list``: train the zoo backbones a grid uses and write their
entries, check every checksum, or list the entries (see :mod:`bench.zoo`)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.zoo import ZooError, entries, entry_name, folder, load_state, plan_build, sha256


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


def _build(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bench.cache import Cache, default_root
    from bench.config import ConfigError, Grid
    from bench.harness import set_threads
    from bench.pipeline import Pipeline
    from bench.pse.train import stage_key

    try:
        cells = Grid.load(args.grid, overrides=args.overrides).cells()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    set_threads()
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


def _verify(args: argparse.Namespace) -> int:
    bad = 0
    for rec in entries(args.zoo_dir).values():
        try:
            load_state(rec, args.zoo_dir)
            print(f"ok   {rec['file']} {rec['sha256'][:16]} ({rec['steps']} steps, commit {rec['commit']})")
        except ZooError as exc:
            bad += 1
            print(f"FAIL {exc}")
    return 1 if bad else 0


def _list(args: argparse.Namespace) -> int:
    for key, rec in entries(args.zoo_dir).items():
        print(f"{rec['file']}: key {key}, {rec['params']} params, {rec['steps']} steps in {rec['train_wall_s']:.0f} s, "
              f"val SI-SDRi {rec['best_val_si_sdri']:.2f} dB, corpus {rec['corpus']['content_sha256'][:12]}, "
              f"teacher {rec['teacher_weights'] or rec['teacher']}")
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
    for name in ("verify", "list"):
        sub.add_parser(name).add_argument("--zoo-dir", default=None)
    b.add_argument("--zoo-dir", default=None)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded as the entry's command
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return {"build": _build, "verify": _verify, "list": _list}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
