"""CLI: train a PSE backbone (personalized and/or not) and measure it on held-out speakers.

``python -m bench.pse [--systems personalized,baseline] [--n-test 100] [--seed 12345] [-o key=value ...]``

Trains (or loads from the cache) each system with :func:`bench.pse.train.train_pse`, then
reports SI-SDRi (dB, mean and 95 % bootstrap CI) on ``--n-test`` random mixtures of the
``test`` split (unseen speakers): personalized, personalized with the wrong speaker's
embedding, non-personalized, and the mixture's own SI-SDR.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def _ci(x: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [x[rng.integers(len(x), size=len(x))].mean() for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


@torch.no_grad()
def heldout_si_sdri(model, test: dict, emb: torch.Tensor | None, chunk: int = 16) -> np.ndarray:
    """Per-mixture SI-SDRi (dB) of ``model`` on ``test`` (latency-aligned)."""
    from bench.pse.train import _align, si_sdr

    out = []
    for i in range(0, test["mixture"].shape[0], chunk):
        mix, tgt = test["mixture"][i : i + chunk], test["target"][i : i + chunk]
        e = emb[i : i + chunk] if emb is not None else None
        est, ref = _align(model(mix, e), tgt, model.latency_samples)
        out.append(si_sdr(est, ref) - si_sdr(mix[:, : ref.shape[1]], ref))
    return torch.cat(out).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pse", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="experiment YAML (defaults when absent)")
    p.add_argument("-o", "--override", action="append", default=[], help="dotted key=value")
    p.add_argument("--systems", default="personalized,baseline")
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--test-s", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=12345,
                   help="seed of the test-mixture draw (another seed: an independent draw, same speakers)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from bench.cache import Cache
    from bench.config import load_config
    from bench.data.corpus import load_corpus
    from bench.data.mix import MixtureSampler
    from bench.pse.pdfnet2 import estimate_macs_per_second
    from bench.pse.train import train_pse
    from bench.teachers import load_teacher

    cfg = load_config(args.config, args.override)
    cache = Cache(cfg.cache_dir or None)
    corpus = load_corpus(cfg.corpus, cache)
    teacher = load_teacher(cfg.teacher, cache, corpus, "cpu")
    sampler = MixtureSampler(corpus, "test", cfg.mix, args.seed)
    test = sampler.batch(np.random.default_rng(args.seed), args.n_test, args.test_s)
    emb = teacher.embed(test["enrollment"].float()).float()
    wrong = emb.roll(1, 0)
    results: dict[str, object] = {}
    from bench.pse.train import _align, si_sdr

    _, ref = _align(test["target"], test["target"], 160)
    mix_sdr = si_sdr(test["mixture"][:, : ref.shape[1]], ref).numpy()
    results["mixture_si_sdr"] = float(mix_sdr.mean())
    for system in args.systems.split(","):
        cfg.pse.personalized = system == "personalized"
        t0 = time.time()
        model, info = train_pse(cfg, corpus, teacher, cache)
        row = {k: info.get(k) for k in ("steps", "best_step", "best_val_si_sdri", "wall_s", "params", "cached")}
        row["train_call_s"] = time.time() - t0
        row["macs_per_s"] = estimate_macs_per_second(model)
        x = heldout_si_sdri(model, test, emb if model.personalized else None)
        row["si_sdri"], row["si_sdri_ci"] = float(x.mean()), _ci(x)
        if model.personalized:
            row["per_item"] = x
            w = heldout_si_sdri(model, test, wrong)
            row["si_sdri_wrong_emb"] = float(w.mean())
        results[system] = row
    if "personalized" in results and "baseline" in results:
        d = results["personalized"]["per_item"] - heldout_si_sdri(
            train_pse(_np(cfg), corpus, teacher, cache)[0], test, None
        )
        results["paired_gap"] = {"mean": float(d.mean()), "ci": _ci(d)}
    for r in results.values():
        if isinstance(r, dict):
            r.pop("per_item", None)
    print(json.dumps(results, indent=2, default=float))
    return 0


def _np(cfg):
    cfg.pse.personalized = False
    return cfg


if __name__ == "__main__":
    raise SystemExit(main())
