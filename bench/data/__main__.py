"""CLI: ``python -m bench.data build --size {smoke,default,large} [--seed N] [--cache-dir DIR]``.

Builds the embedded corpus (a no-op when already built), prints a summary and, as the last
stdout line, the manifest path. Exits 2 with a one-line message when too few speakers
could be built.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the embedded corpus and print its manifest path")
    b.add_argument("--size", choices=["smoke", "default", "large"], default="default")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--cache-dir", default="", help="cache root (default $PSE_KD_CACHE or ~/.cache/pse-kd-bench)")
    b.add_argument("--workers", type=int, default=2, help="synthesis processes (default 2)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from bench.cache import Cache, default_root
    from bench.data.corpus import Corpus
    from bench.data.embedded import CorpusBuildError, build_embedded

    t0 = time.time()
    try:
        cache = Cache(default_root(args.cache_dir))
        manifest = build_embedded(args.size, args.seed, cache, workers=max(1, args.workers),
                                  quiet=args.quiet)
    except CorpusBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = Corpus(manifest.parent, manifest).summary()
    print(
        f"corpus {args.size} seed {args.seed}: {s['speakers']} speakers "
        f"(real {s['speakers_real']}, tts {s['speakers_tts']}, derived {s['speakers_derived']}), "
        f"{s['utterances']} utterances, {s['minutes']} min; split train/val/test "
        f"{s['speakers_train']}/{s['speakers_val']}/{s['speakers_test']}; {time.time() - t0:.1f} s"
    )
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
