"""Code versions of the cached stages, and the check that they are bumped when the code changes.

Every cached stage folds a version number into its cache key. :data:`STAGES` lists, per stage,
where that number lives and which source files shape what the stage produces. The committed
record ``bench/stage_versions.json`` holds, per stage, the version and a fingerprint of those
files (their syntax trees without docstrings, so comments and documentation do not count).
``tests/test_versions.py`` fails when a stage's fingerprint differs from the record while its
version does not: the code changed, so old cached artifacts would be served as if they were
new. Bump the version, then ``python -m bench.versions --update`` rewrites the record.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RECORD = ROOT / "stage_versions.json"

# stage -> (module, attribute path of its version, source files relative to bench/)
STAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "corpus": ("bench.data.embedded", "VERSION", ("data/embedded.py", "data/sentences.py")),
    "teacher": ("bench.teachers.base", "STAGE_VERSION", ("teachers/base.py", "teachers/ge2e.py", "teachers/ecapa.py",
                                                         "teachers/titanet.py", "teachers/wavlm.py",
                                                         "teachers/vfl.py", "teachers/_train.py", "teachers/emb_cache.py", "runtime.py",
                                                         "trainloop.py", "data/corpus.py", "data/pieces.py", "data/audio_cache.py")),
    "pse": ("bench.pse.train", "STAGE_VERSION", ("pse/train.py", "pse/pdfnet2.py", "pse/base.py", "pse/embaug.py",
                                                 "data/mix.py", "data/mixture.py", "data/conditions.py", "data/steps.py", "runtime.py",
                                                 "trainloop.py", "data/corpus.py", "data/pieces.py", "data/audio_cache.py")),
    "student": ("bench.distill", "STAGE_VERSION", ("distill.py", "students/tiny.py", "students/heads.py", "losses.py", "data/steps.py",
                                                   "runtime.py", "trainloop.py")),
    "evalset": ("bench.pipeline.keys", "STAGE_VERSION.evalset", ("data/mix.py", "data/mixture.py", "data/conditions.py",
                                                                 "data/streams.py", "data/corpus.py", "data/pieces.py", "data/audio_cache.py",
                                                                 "pipeline/keys.py", "pipeline/stages.py")),
    "eval": ("bench.pipeline.keys", "STAGE_VERSION.eval", ("pipeline/__init__.py", "pipeline/keys.py",
                                                           "pipeline/stages.py", "pipeline/cell.py",
                                                           "pipeline/speakers.py", "pipeline/cost.py",
                                                           "refine/base.py", "refine/refiners.py",
                                                           "refine/streaming.py", "metrics/quality.py",
                                                           "metrics/dnsmos.py", "students/streaming.py",
                                                           "pse/limit.py", "data/corpus.py", "data/pieces.py", "data/audio_cache.py")),
}


def version(stage: str) -> int:
    """The version number a stage's code declares."""
    module, attr, _ = STAGES[stage]
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return int(obj)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def fingerprint(stage: str) -> str:
    """SHA-256 of the stage's source files' syntax trees (docstrings and comments excluded)."""
    h = hashlib.sha256()
    for rel in STAGES[stage][2]:
        tree = _strip_docstrings(ast.parse((ROOT / rel).read_text()))
        h.update(rel.encode())
        h.update(ast.dump(tree, include_attributes=False).encode())
    return h.hexdigest()[:16]


def current() -> dict[str, dict[str, int | str]]:
    return {s: {"version": version(s), "fingerprint": fingerprint(s)} for s in STAGES}


def stale() -> list[str]:
    """Messages for every stage whose code changed without a version bump (empty when none)."""
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    out = []
    for stage, now in current().items():
        was = record.get(stage)
        if was is None:
            out.append(f"stage {stage!r} is not in {RECORD.name}: run `python -m bench.versions --update`")
        elif now["fingerprint"] != was["fingerprint"] and now["version"] == was["version"]:
            module, attr, files = STAGES[stage]
            out.append(f"the code of stage {stage!r} ({', '.join(files)}) changed but its version is still "
                       f"{now['version']}: bump {module}.{attr}, then run `python -m bench.versions --update`")
        elif now != was:
            out.append(f"stage {stage!r}: version {was['version']} -> {now['version']}; the record is out of date: "
                       "run `python -m bench.versions --update`")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.versions", description=__doc__.splitlines()[0])
    p.add_argument("--update", action="store_true", help=f"rewrite {RECORD.name} with the current versions")
    args = p.parse_args(argv)
    if args.update:
        RECORD.write_text(json.dumps(current(), indent=2, sort_keys=True) + "\n")
        print(f"wrote {RECORD}")
        return 0
    msgs = stale()
    for m in msgs:
        print(m)
    return 1 if msgs else 0


if __name__ == "__main__":
    raise SystemExit(main())
