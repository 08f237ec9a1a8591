"""Speaker verification of teachers on the evaluation speakers: one table, every teacher named by its weights.

``python -m bench.teacher_eer --teachers ge2e,vfl [--set eval.split=test] [--out results/teacher_eer]``
``python -m bench.teacher_eer --grid ablations/teachers.yaml [--set ...] [--out ...]``

Each teacher (``name`` or ``name:source``) embeds the same crops of the evaluation speakers
(``eval.split`` of the test corpus: 8 crops of 1 s per speaker, all pairs scored, as the
leaderboard's ``teacher_eer``) and gets its EER and minDCF, its parameters and where its weights
came from. ``--grid`` takes the teachers (each with its own settings, e.g. a trained teacher's
budget) and the evaluation settings from a grid's cells instead. ``--set`` takes the config overrides ``bench.run`` does (``test_corpus.*`` to score
another corpus's speakers). Writes ``teachers.csv`` and ``teachers.md`` under ``--out`` when given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config import ConfigError, load_config


def teacher_rows(teachers: list[str], overrides: list[str], progress: bool = True) -> pd.DataFrame:
    """One row per teacher spec (``name`` or ``name:source``): EER, minDCF, params, weights."""
    configs = []
    for spec in teachers:
        name, _, source = spec.partition(":")
        extra = [f"teacher.name={name}"] + ([f"teacher.source={source}"] if source else [])
        configs.append(load_config(None, [*overrides, *extra]))
    return config_rows(configs, progress)


def grid_teachers(grid: str, overrides: list[str]) -> list[Any]:
    """One config per distinct teacher of ``grid``'s cells (with ``overrides``), in grid order."""
    from dataclasses import astuple

    from bench.config import Grid

    seen: dict[tuple, Any] = {}
    for c in Grid.load(grid, overrides=overrides).cells():
        seen.setdefault(astuple(c.config.teacher), c.config)
    return list(seen.values())


def config_rows(configs: list[Any], progress: bool = True) -> pd.DataFrame:
    """One row per config's teacher: EER, minDCF, params, weights, on its ``eval.split`` speakers."""
    from bench.cache import Cache, default_root
    from bench.pipeline import Pipeline
    from bench.runtime import pick_device

    rows: list[dict[str, Any]] = []
    pipe: Pipeline | None = None
    for cfg in configs:
        name = cfg.teacher.name
        if pipe is None:
            pipe = Pipeline(Cache(default_root(cfg.cache_dir)), device=pick_device(cfg.device), progress=progress)
        teacher = pipe.teacher(cfg)
        m = pipe.speaker_metrics(cfg, None)
        corpus = cfg.test_corpus if cfg.test_corpus.name else cfg.corpus
        rows.append({
            "teacher": name, "teacher_source": cfg.teacher.source, "dim": teacher.dim,
            "params": int(sum(p.numel() for p in teacher.parameters())) or getattr(teacher, "num_params", 0),
            "eer": m["teacher_eer"], "min_dcf": m["teacher_min_dcf"],
            "speakers": f"{corpus.name}{':' + corpus.path if corpus.path else ''} / {cfg.eval.split}",
            "teacher_weights": getattr(teacher, "weights_origin", ""), "identity": teacher.identity,
        })
    return pd.DataFrame(rows)


def markdown(rows: pd.DataFrame) -> str:
    lines = ["| teacher | source | dim | params | EER (%) | minDCF | speakers | weights |", "|---" * 8 + "|"]
    for _, r in rows.iterrows():
        lines.append(f"| {r.teacher} | {r.teacher_source} | {r.dim} | {r.params / 1e6:.2f} M | {100 * r.eer:.1f} | "
                     f"{r.min_dcf:.3f} | {r.speakers} | {r.teacher_weights} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.teacher_eer", description=__doc__.splitlines()[0])
    p.add_argument("--teachers", default="ge2e,vfl", help="comma-separated name or name:source (default ge2e,vfl)")
    p.add_argument("--grid", default="", help="take the teachers and evaluation settings from this grid's cells")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, as for bench.run (repeatable)")
    p.add_argument("--out", default="", help="folder for teachers.csv and teachers.md (default: print only)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from bench.registry import RegistryError
    from bench.teachers.base import TeacherLoadError
    from bench.zoo import ZooError

    try:
        if args.grid:
            rows = config_rows(grid_teachers(args.grid, args.overrides), not args.no_progress)
        else:
            rows = teacher_rows([t for t in args.teachers.split(",") if t], args.overrides, not args.no_progress)
    except (ConfigError, RegistryError, TeacherLoadError, ZooError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown(rows)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows.to_csv(out / "teachers.csv", index=False)
        (out / "teachers.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
