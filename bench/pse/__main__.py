"""CLI: train a PSE backbone (personalized and/or not) and measure it on held-out speakers.

``python -m bench.pse [--systems personalized,baseline] [--n-test 100] [--seed 12345] [--quality]
[-o key=value ...]``

Trains (or loads from the cache) each system with :func:`bench.pse.train.train_pse`, then
reports on ``--n-test`` random mixtures of unseen speakers (``eval.split`` of ``test_corpus``
when one is set, e.g. ``-o test_corpus.name=manifest -o test_corpus.path=DIR/manifest.csv
-o eval.split=all``; else the ``eval.split`` split of ``corpus``: ``test`` by default, ``val`` to
choose a setting without looking at the test speakers), mean and 95 % bootstrap CI:

* SI-SDRi (dB) of the personalized model with the clean-enrollment embedding (``static``), with
  the wrong speaker's embedding, with the zero embedding, and of the non-personalized model;
* the paired gap static minus non-personalized;
* with ``--quality``: PESQ-WB and STOI of the mixture and of each system, and each system's
  paired difference to the mixture.

``--system-override SYSTEM:pse.KEY=VALUE`` changes one system only, e.g. ``personalized:pse.seed=2``
scores another training run of the personalized backbone against the default twin on the same
mixtures. A bad value or system is a message and exit status 2, not a traceback.

The output is one JSON object (numbers only, so scripts can read it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch


def _ci(x: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    from bench.metrics.stats import bootstrap_ci

    return bootstrap_ci(x, n_boot=n, seed=seed)


def _summary(x: np.ndarray) -> dict[str, Any]:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return {"mean": float("nan"), "ci": [float("nan"), float("nan")], "n": 0}
    return {"mean": float(x.mean()), "ci": list(_ci(x)), "n": int(x.size)}


@torch.no_grad()
def enhance(model, mixture: torch.Tensor, emb: torch.Tensor | None, chunk: int = 16) -> torch.Tensor:
    """``model`` on ``mixture [N, T]`` in chunks (on the model's device), latency-aligned:
    ``[N, T - latency]`` on the CPU."""
    dev = next(model.parameters()).device
    outs = []
    for i in range(0, mixture.shape[0], chunk):
        e = emb[i : i + chunk].to(dev) if emb is not None else None
        outs.append(model(mixture[i : i + chunk].to(dev), e)[:, model.latency_samples :].cpu())
    return torch.cat(outs)


def heldout_si_sdri(model, test: dict, emb: torch.Tensor | None, chunk: int = 16) -> np.ndarray:
    """Per-mixture SI-SDRi (dB) of ``model`` on ``test`` (latency-aligned), by the leaderboards'
    :func:`bench.metrics.quality.si_sdri`."""
    from bench.metrics.quality import si_sdri

    est = enhance(model, test["mixture"], emb, chunk).numpy()
    ref = test["target"][:, : est.shape[1]].numpy()
    mix = test["mixture"][:, : est.shape[1]].numpy()
    return np.array([si_sdri(e, r, m) for e, r, m in zip(est, ref, mix, strict=True)])


def _quality(est: torch.Tensor, test: dict, workers: int) -> dict[str, np.ndarray]:
    from bench.metrics.quality import evaluate_utterances

    n = est.shape[1]
    items = [(e, t[:n], m[:n]) for e, t, m in zip(est.numpy(), test["target"].numpy(), test["mixture"].numpy(),
                                                   strict=True)]
    df = evaluate_utterances(items, workers=workers, pesq=True)
    return {"pesq": df["pesq"].to_numpy(), "stoi": df["stoi"].to_numpy()}


def test_mixtures(cfg, cache, n: int, test_s: float, seed: int) -> tuple[dict, Any]:
    """``n`` random mixtures of the evaluation corpus/split of ``cfg`` (see the module doc)."""
    from bench.data.corpus import load_corpus
    from bench.data.mix import MixtureSampler

    corpus_cfg = cfg.test_corpus if cfg.test_corpus.name else cfg.corpus
    corpus = load_corpus(corpus_cfg, cache)
    split = None if cfg.eval.split == "all" else cfg.eval.split
    sampler = MixtureSampler(corpus, split, cfg.mix, seed)
    return sampler.batch(np.random.default_rng(seed), n, test_s), corpus


def _quality_block(test: dict, ref: torch.Tensor, outs: dict[str, torch.Tensor], names: tuple[str, ...],
                   workers: int) -> dict[str, Any]:
    """PESQ-WB and STOI of the mixture and of each output in ``names``, and each minus the mixture."""
    mix = test["mixture"][:, : ref.shape[1]]
    q_mix = _quality(mix, test, workers)
    block: dict[str, Any] = {"mixture": {m: _summary(v) for m, v in q_mix.items()}}
    for name in names:
        if name in outs:
            q = _quality(outs[name], test, workers)
            block[name] = {m: _summary(v) for m, v in q.items()}
            block[f"{name}_minus_mixture"] = {m: _summary(q[m] - q_mix[m]) for m in q}
    return block


SYSTEMS = ("personalized", "baseline")


def _system_overrides(items: list[str], systems: list[str]) -> dict[str, list[str]]:
    """``SYSTEM:pse.KEY=VALUE`` items grouped by system (ConfigError naming a bad item)."""
    from bench.config import ConfigError, parse_override

    out: dict[str, list[str]] = {name: [] for name in systems}
    for name in systems:
        if name not in SYSTEMS:
            raise ConfigError(f"--systems has {name!r}; choices: {', '.join(SYSTEMS)}")
    for item in items:
        name, sep, override = item.partition(":")
        if not sep or name not in out:
            raise ConfigError(f"--system-override {item!r}: expected SYSTEM:pse.KEY=VALUE with SYSTEM one of "
                              f"{', '.join(systems)}")
        if not parse_override(override)[0].startswith("pse."):
            raise ConfigError(f"--system-override {item!r}: only pse.* keys can differ between systems "
                              "(the test mixtures, teacher and corpus are shared)")
        out[name].append(override)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pse", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="experiment YAML (defaults when absent)")
    p.add_argument("-o", "--override", action="append", default=[], help="dotted key=value")
    p.add_argument("--systems", default="personalized,baseline")
    p.add_argument("--system-override", action="append", default=[], metavar="SYSTEM:pse.KEY=VALUE",
                   help="a pse.* override for one system only, e.g. personalized:pse.seed=2 (score another "
                        "training run of the personalized backbone against the default twin)")
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--test-s", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=12345,
                   help="seed of the test-mixture draw (another seed: an independent draw, same speakers)")
    p.add_argument("--quality", action="store_true", help="also PESQ-WB and STOI (slower)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help="where to train and run the backbones (default: the config's device, auto: CUDA when present)")
    p.add_argument("--train-only", action="store_true", help="train (or load) the systems, score nothing")
    args = p.parse_args(argv)
    if args.n_test < 1 or args.test_s <= 0:
        p.error(f"--n-test must be >= 1 and --test-s > 0 (got {args.n_test}, {args.test_s})")
    if args.threads:
        torch.set_num_threads(args.threads)

    from bench.cache import Cache
    from bench.config import ConfigError, load_config
    from bench.data.corpus import load_corpus
    from bench.metrics.complexity import backbone_macs_per_second
    from bench.pse.limit import with_limit
    from bench.pse.train import train_pse
    from bench.runtime import pick_device
    from bench.teachers import load_teacher

    systems = args.systems.split(",")
    try:
        per_system = _system_overrides(args.system_override, systems)
        cfg = load_config(args.config, args.override)
        system_cfgs = {name: load_config(args.config, args.override + extra) if extra else cfg
                       for name, extra in per_system.items()}
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = Cache(cfg.cache_dir or None)
    corpus = load_corpus(cfg.corpus, cache)
    device = pick_device(args.device or cfg.device)
    teacher = load_teacher(cfg.teacher, cache, corpus, device)
    models = {}
    results: dict[str, Any] = {}
    for system in systems:
        sc = system_cfgs[system]
        c = replace(sc, pse=replace(sc.pse, personalized=system == "personalized"))
        t0 = time.time()
        model, info = train_pse(c, corpus, teacher, cache, device=device)
        model = with_limit(model, c.pse.atten_lim_db)
        models[system] = model
        row = {k: info.get(k) for k in ("steps", "best_step", "best_val_si_sdri", "wall_s", "params", "cached",
                                       "pse_source")}
        row["train_call_s"] = time.time() - t0
        row["macs_per_s"] = backbone_macs_per_second(model)
        results[system] = row
    if args.train_only:
        print(json.dumps(results, indent=2, default=float))
        return 0

    test, test_corpus = test_mixtures(cfg, cache, args.n_test, args.test_s, args.seed)
    results["test_corpus"] = getattr(test_corpus, "key", "")
    emb = teacher.embed(test["enrollment"].float()).float()
    per: dict[str, np.ndarray] = {}
    outs: dict[str, torch.Tensor] = {}
    from bench.metrics.quality import si_sdr
    from bench.refine import baseline_name

    base = baseline_name()  # the enrollment embedding as it is: the static baseline

    lat = next(iter(models.values())).latency_samples
    ref = test["target"][:, : test["target"].shape[1] - lat]
    results["mixture_si_sdr"] = float(np.mean([si_sdr(m, r) for m, r in zip(test["mixture"][:, : ref.shape[1]].numpy(),
                                                                            ref.numpy(), strict=True)]))
    for model in models.values():
        if model.personalized:
            variants = {base: emb, "wrong_emb": emb.roll(1, 0), "zero_emb": torch.zeros_like(emb)}
        else:
            variants = {"nonpersonalized": None}
        for name, e in variants.items():
            outs[name] = enhance(model, test["mixture"], e)
            per[name] = heldout_si_sdri(model, test, e)
            results.setdefault("si_sdri", {})[name] = _summary(per[name])
    if base in per and "nonpersonalized" in per:
        results[f"{base}_minus_nonpersonalized"] = _summary(per[base] - per["nonpersonalized"])
    if args.quality:
        results["quality"] = _quality_block(test, ref, outs, (base, "nonpersonalized"), cfg.eval.workers)
    print(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
