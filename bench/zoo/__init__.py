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
``python -m bench.zoo list`` prints the entries. This package reads the zoo (the pipeline uses
it); :mod:`bench.zoo.__main__`, the command, writes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")

ZOO_DIR = Path(__file__).resolve().parents[2] / "zoo"


class ZooError(RuntimeError):
    """A zoo entry is missing, damaged or does not fit the configuration."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder(zoo_dir: str | Path | None = None) -> Path:
    """The zoo: ``zoo_dir``, or the repository's (:data:`ZOO_DIR`) when None."""
    return Path(zoo_dir) if zoo_dir is not None else ZOO_DIR


def entries(zoo_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Provenance records of every entry, by stage key."""
    out: dict[str, dict[str, Any]] = {}
    d = folder(zoo_dir)
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


def verified(path: Path, rec: dict[str, Any], rebuild: str) -> Path:
    """``path`` when it exists and matches entry ``rec``'s SHA-256; else ZooError naming the file
    and how to ``rebuild`` it."""
    if not path.is_file():
        raise ZooError(f"zoo file {path} is missing (entry {rec.get('_meta_path', rec.get('name'))})")
    got = sha256(path)
    if got != rec["sha256"]:
        raise ZooError(f"zoo file {path} is damaged: sha256 {got[:16]}... != {rec['sha256'][:16]}... recorded; "
                       f"rebuild it with {rebuild}")
    return path


def load_state(rec: dict[str, Any], zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """The verified state dict of entry ``rec`` (ZooError naming the file when it is damaged)."""
    import torch

    path = Path(rec["_meta_path"]).parent / rec["file"] if "_meta_path" in rec else folder(zoo_dir) / rec["file"]
    verified(path, rec, "`python -m bench.zoo build` or set pse.source=train")
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


def entry_name(cfg: Any, key: str = "") -> str:
    """File stem of a backbone's zoo entry:
    ``<pse>-<size>-<teacher>[-student-space-<loss>][-<level>]-<personalized|nonpersonalized>[-<first 8
    of the stage key>]`` (the student-space part for a backbone conditioned on a student's embedding,
    the level for one trained at an operating level other than ``hard``)."""
    kind = "personalized" if cfg.pse.personalized else "nonpersonalized"
    teacher = cfg.teacher.name if cfg.pse.personalized else "none"
    if cfg.pse.personalized and getattr(cfg, "reading", "teacher") == "student":
        from bench.readings import space_label

        teacher += "-" + space_label(cfg)  # e.g. ge2e-student-space-contrastive
    level = getattr(getattr(cfg, "mix", None), "level", "hard")
    if level != "hard":  # a backbone trained at another operating level (presets/levels/)
        teacher += f"-{level}"
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


# --------------------------------------------------------------------------- students
STUDENTS = "students"  # zoo/students/<name>.pt + <name>.json, by the student's stage key


def student_entries(zoo_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Provenance records of the shipped students (``zoo/students/``), by student stage key
    (:func:`bench.distill.distill_key`)."""
    return entries(folder(zoo_dir) / STUDENTS)


def find_student(key: str, zoo_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The shipped student made under stage key ``key`` (None when there is none)."""
    return student_entries(zoo_dir).get(key)


def student_file(rec: dict[str, Any]) -> Path:
    """The verified ``.pt`` of student entry ``rec`` (ZooError naming it when missing or damaged)."""
    return verified(Path(rec["_meta_path"]).parent / rec["file"], rec,
                    "`python -m bench.zoo add-students` or set distill.source=train")


def student_name(cfg: Any, key: str) -> str:
    """File stem of a student's zoo entry, e.g. ``tiny-contrastive-ge2e-92a1ada9``."""
    from bench.losses import variant_label

    return f"{cfg.student.name}-{cfg.distill.loss}{variant_label(cfg.distill)}-{cfg.teacher.name}-{key[:8]}"


# --------------------------------------------------------------------------- teachers
TEACHERS = "teachers"  # zoo/teachers/<name>/<artifact> + <name>.json, by the teacher's training key


def teacher_entries(zoo_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Provenance records of the shipped in-suite teachers (``zoo/teachers/``), by training key
    (:func:`bench.teachers._train.trained_key`)."""
    return entries(folder(zoo_dir) / TEACHERS)


def find_teacher(key: str, zoo_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The shipped teacher trained under key ``key`` (None when there is none)."""
    return teacher_entries(zoo_dir).get(key)


def artifact_files(path: Path) -> dict[str, str]:
    """SHA-256 of every file of a teacher artifact (a file, or a folder walked recursively), by
    path relative to the artifact's parent (the entry's folder)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path.parent).as_posix(): sha256(p) for p in files}


def files_digest(files: dict[str, str]) -> str:
    """One SHA-256 over a ``{relative path: sha256}`` listing (the entry's checksum)."""
    return hashlib.sha256("".join(f"{k}\t{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()


def teacher_artifact(rec: dict[str, Any]) -> Path:
    """The verified artifact (file or folder) of teacher entry ``rec``: every file it lists is there
    with its SHA-256 and the folder holds no other file; else ZooError naming the file and how to
    rebuild it."""
    path = Path(rec["_meta_path"]).parent / rec["file"]
    root = path.parent  # the entry's folder, which the listed paths are relative to
    rebuild = "`python -m bench.zoo add-teachers` or set teacher.train_source=train"
    if not path.exists():
        raise ZooError(f"zoo teacher {path} is missing (entry {rec['_meta_path']}); rebuild it with {rebuild}")
    have = artifact_files(path)
    want: dict[str, str] = rec["files"]
    for rel, digest in sorted(want.items()):
        if rel not in have:
            raise ZooError(f"zoo teacher file {root / rel} is missing; rebuild it with {rebuild}")
        if have[rel] != digest:
            raise ZooError(f"zoo teacher file {root / rel} is damaged: sha256 {have[rel][:16]}... != "
                           f"{digest[:16]}... recorded; rebuild it with {rebuild}")
    extra = sorted(set(have) - set(want))
    if extra:
        raise ZooError(f"zoo teacher {path} holds files its entry does not list: {', '.join(extra)}")
    return path


def teacher_name(name: str, cfg: Any, key: str) -> str:
    """File stem of a teacher's zoo entry, e.g. ``ecapa-cpu-1800-3f2a9c1b``."""
    return f"{name}-{cfg.train_size}-{cfg.train_steps}-{key[:8]}"
