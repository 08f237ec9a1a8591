"""A small model zoo: trained backbones shipped in the repository, with provenance and checksums.

Backbones too slow to train inside the main job's budget live in ``zoo/`` (a few MB each). An
entry is ``zoo/<name>.pt`` (the state dict) plus ``zoo/<name>.json`` (provenance: the stage key
and the training config it was made from, corpus content hash, teacher identity, steps, wall
time, commit, command, date, and the file's SHA-256).

* ``pse.source: zoo`` (the default of the main grid) looks the backbone up by its stage key
  (:func:`bench.pse.train.stage_key`: training config, teacher identity, corpus content, mixing,
  code version). A matching entry is verified against its checksum and loaded; no entry (another
  corpus, a changed training config) means the backbone is trained here, with a warning that says
  so. A damaged file is an error naming it, never silently used.
* ``pse.source: train`` always trains (and caches) it here.
* ``pse.source: local`` + ``pse.path`` loads a user's checkpoint (a state dict, or a zoo entry's
  ``.pt``) for the configured architecture, without training.

``python -m bench.zoo build --grid ablations/losses.yaml`` trains every zoo backbone the grid uses
that the zoo does not already hold intact (same stage key, checksum verified) and writes its entry;
``--force`` retrains and rewrites them all. ``python -m bench.zoo verify`` checks every checksum;
``python -m bench.zoo list`` prints the entries.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")

ZOO_DIR = Path(__file__).resolve().parents[1] / "zoo"


class ZooError(RuntimeError):
    """A zoo entry is missing, damaged or does not fit the configuration."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dir(zoo_dir: str | Path | None) -> Path:
    return Path(zoo_dir) if zoo_dir is not None else ZOO_DIR


def entries(zoo_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Provenance records of every entry, by stage key."""
    out: dict[str, dict[str, Any]] = {}
    d = _dir(zoo_dir)
    for meta in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            rec = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ZooError(f"zoo entry {meta} is unreadable: {exc}") from None
        rec["_meta_path"] = str(meta)
        out[rec["stage_key"]] = rec
    return out


def find(key: str, zoo_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The entry made for stage key ``key`` (None when there is none)."""
    return entries(zoo_dir).get(key)


def nearest(pse: dict[str, Any], teacher: str, corpus_key: str, zoo_dir: str | Path | None = None,
            max_diff: int = 3) -> list[tuple[str, dict[str, tuple[Any, Any]]]]:
    """Zoo entries for the same teacher and corpus whose training config differs from ``pse`` (a
    :func:`bench.pse.train.training_slice`) in at most ``max_diff`` fields, fewest first: ``[(name,
    {field: (this value, the entry's value)})]``. It tells a user whose backbone missed the zoo which
    override would have found one (e.g. ``pse.seed`` for the entries made before the seed-1 default)."""
    out = []
    for rec in entries(zoo_dir).values():
        if rec.get("teacher") != teacher or (rec.get("corpus") or {}).get("key") != corpus_key:
            continue
        theirs = rec.get("pse") or {}
        diff = {k: (pse.get(k), theirs.get(k)) for k in sorted(set(pse) | set(theirs)) if pse.get(k) != theirs.get(k)}
        if diff and len(diff) <= max_diff:
            out.append((str(rec.get("name", rec["stage_key"])), diff))
    return sorted(out, key=lambda item: (len(item[1]), item[0]))


def describe_nearest(near: list[tuple[str, dict[str, tuple[Any, Any]]]], limit: int = 3) -> str:
    """The tail of the zoo-miss warning: ``"; closest zoo entries, with the overrides that select
    them: NAME (pse.seed=0), ..."`` ("" when none)."""
    if not near:
        return ""
    def override(k: str, theirs: Any) -> str:  # JSON values read back by the override parser
        return f"pse.{k} at its default" if theirs is None else f"pse.{k}={json.dumps(theirs)}"

    parts = [f"{name} ({', '.join(override(k, v[1]) for k, v in diff.items())})" for name, diff in near[:limit]]
    return "; closest zoo entries, with the overrides that select them: " + ", ".join(parts)


def load_state(rec: dict[str, Any], zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """The verified state dict of entry ``rec`` (ZooError naming the file when it is damaged)."""
    import torch

    path = Path(rec["_meta_path"]).parent / rec["file"] if "_meta_path" in rec else _dir(zoo_dir) / rec["file"]
    if not path.is_file():
        raise ZooError(f"zoo file {path} is missing (entry {rec['_meta_path']})")
    got = sha256(path)
    if got != rec["sha256"]:
        raise ZooError(f"zoo file {path} is damaged: sha256 {got[:16]}... != {rec['sha256'][:16]}... recorded; "
                       f"rebuild it with `python -m bench.zoo build` or set pse.source=train")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - checksum matched but torch cannot read it
        raise ZooError(f"zoo file {path} is not a readable torch state dict: {type(exc).__name__}: {exc}") from None


def load_local(path: str | Path) -> dict[str, Any]:
    """A user's checkpoint for ``pse.source: local``: a state dict, or a dict holding one under
    ``state_dict`` / ``model`` (a training checkpoint)."""
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise ZooError(f"pse.path {str(p)!r} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear message
        raise ZooError(f"pse.path {str(p)!r} is not a readable torch checkpoint: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ZooError(f"pse.path {str(p)!r} holds a {type(obj).__name__}, not a state dict")
    return obj


def add(name: str, state_path: str | Path, info: dict[str, Any], cfg: Any, corpus: Any, teacher: Any,
        command: str, zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """Copy a trained backbone into the zoo as ``<name>.pt`` with its provenance ``<name>.json``."""
    import shutil

    from bench.pse.train import STAGE_VERSION, teacher_identity, training_slice
    from bench.report import git_commit

    d = _dir(zoo_dir)
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
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    from bench.cache import atomic_write_json

    atomic_write_json(d / f"{name}.json", rec)
    rec["_meta_path"] = str(d / f"{name}.json")
    return rec


def _content_stamp(corpus: Any) -> str:
    from bench.data.corpus import CONTENT_STAMP

    p = Path(getattr(corpus, "root", ".")) / CONTENT_STAMP
    return p.read_text().strip() if p.is_file() else ""


def entry_name(cfg: Any, key: str = "") -> str:
    """File stem of a backbone's zoo entry:
    ``<pse>-<size>-<teacher>-<personalized|nonpersonalized>[-<first 8 of the stage key>]``."""
    kind = "personalized" if cfg.pse.personalized else "nonpersonalized"
    teacher = cfg.teacher.name if cfg.pse.personalized else "none"
    return f"{cfg.pse.name}-{cfg.pse.size}-{teacher}-{kind}" + (f"-{key[:8]}" if key else "")


def plan_build(keys: dict[str, str], zoo_dir: str | Path | None = None,
               force: bool = False) -> tuple[list[str], dict[str, str]]:
    """Which backbones a build must train.

    Args:
        keys: entry name -> stage key of every backbone the build needs.
        zoo_dir: the zoo (default: the repository's).
        force: train every one, even those the zoo holds.

    Returns:
        The names to train, and for each one skipped why (the zoo entry with its stage key and an
        intact checksum). A damaged or unreadable entry is retrained, with a warning naming it.
    """
    have = entries(zoo_dir)
    todo: list[str] = []
    skipped: dict[str, str] = {}
    for name, key in keys.items():
        rec = have.get(key)
        if force or rec is None:
            todo.append(name)
            continue
        try:
            load_state(rec, zoo_dir)
        except ZooError as exc:
            log.warning("%s: %s; training it again", name, exc)
            todo.append(name)
            continue
        skipped[name] = (f"in the zoo as {rec['file']} (sha256 {rec['sha256'][:16]}, {rec['steps']} steps, "
                         f"commit {rec['commit']}); --force retrains it")
    return todo, skipped


# --------------------------------------------------------------------------- CLI
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
