"""Corpus validation, once, before any cell runs.

Checked for every utterance: no earlier utterance lists the same file (a manifest listing a file
twice would let it enroll and be the target of one mixture), the file reads, it is at least
:data:`MIN_UTT_S` long, and, when every file is decoded (``mode="decode"``), its samples are finite
and it is not silent (RMS above :data:`SILENCE_DBFS`). Checked per speaker and split: every
speaker that may be a test target has at least two usable utterances (one enrolls, another is the
test target, so the target never leaks into its own enrollment), and every split has at least two
speakers (a target and an interferer). Problems are grouped by kind and reported once, naming the
files or speakers and counting them. ``corpus.skip_bad: true`` (for the test corpus
``test_corpus.skip_bad``) drops the bad files and speakers instead, with one warning; a file
listed twice is then kept once, under its first utterance id. A corpus that passes is remembered
by its key (``<cache>/validated/<key>``), so it is read once, not once per run.

Two modes (``corpus.validate``):

- ``header`` (the default): each file's header is trusted and nothing is decoded. The sample rate
  and frame count come from ``<cache>/fileinfo/`` (:class:`bench.data.fileindex.AudioInfoIndex`,
  filled when the manifest was read; a stat per file) or from the header itself. Caught: files
  listed twice, missing files, files whose header cannot be read, files without frames, files
  shorter than :data:`MIN_UTT_S`, and every speaker / split rule above.
- ``decode``: every file is decoded once, which also catches non-finite samples (NaN, inf),
  silent files and damage past the header (e.g. a FLAC file whose frames fail to decode). A
  corpus that passed ``decode`` passes ``header`` without being read again.

In ``header`` mode such a file still stops the run with a :class:`CorpusError` naming it when its
audio is first decoded whole (:class:`bench.data.corpus.Corpus`; :class:`BadAudio` for NaN or
silent audio, :func:`samples_problem`): the mixture sampler decodes every utterance it draws whole
once, so nothing trains on it. A damaged file fails in a read of a piece of it too.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict
from typing import Any

import numpy as np

from bench.audio import SR
from bench.data.audio_checks import SILENCE_DBFS, BadAudio, CorpusError, samples_problem  # noqa: F401  (exported)

log = logging.getLogger("bench")

MIN_UTT_S = 0.5
MIN_SPEAKERS = 2
SHOW = 5  # names listed per kind of problem
MODES = ("header", "decode")  # corpus.validate: trust headers / decode every file


def _audio_problem(corpus: Any, utt_id: str) -> str:
    try:
        x = np.asarray(corpus.audio(utt_id), dtype=np.float64)
    except BadAudio as exc:  # decoded, then refused by the corpus: the checks below name it
        x = np.asarray(exc.samples, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one reported problem
        cause = exc.__cause__ if isinstance(exc, CorpusError) and exc.__cause__ is not None else exc
        return f"unreadable ({type(cause).__name__})"
    if x.size == 0:
        return "empty"
    if not np.isfinite(x).all():
        return "non-finite samples (NaN or inf)"
    if x.size < MIN_UTT_S * SR:
        return f"too short (< {MIN_UTT_S} s)"
    if 20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-12) < SILENCE_DBFS:
        return f"silent (RMS < {SILENCE_DBFS:.0f} dBFS)"
    return ""


class HeaderCheck:
    """The header-mode check of one file (nothing decoded): ``""`` or the problem, from the
    remembered ``(sample rate, frames)`` of ``<cache>/fileinfo/`` while the file is unchanged, else
    from its header (then remembered; :meth:`save` writes the index)."""

    def __init__(self, cache: Any = None) -> None:
        from bench.data.fileindex import AudioInfoIndex, Resolver

        self.index = AudioInfoIndex(cache.root) if cache is not None else None
        self.resolve = Resolver()

    def __call__(self, path: Any) -> str:
        import soundfile as sf

        from bench.cache import file_stamp

        try:
            stamp = file_stamp(path)
        except OSError as exc:
            return f"unreadable ({type(exc).__name__})"
        key = self.resolve(path)
        got = self.index.get(key, stamp) if self.index is not None else None
        if got is None:
            try:
                info = sf.info(str(path))
            except Exception as exc:  # noqa: BLE001 - any unreadable header is one reported problem
                return f"unreadable ({type(exc).__name__})"
            got = (int(info.samplerate), int(info.frames))
            if self.index is not None and got[0] > 0:
                self.index.put(key, stamp, *got)
        sr, frames = got
        if frames <= 0 or sr <= 0:
            return "empty"
        if frames / sr < MIN_UTT_S:
            return f"too short (< {MIN_UTT_S} s)"
        return ""

    def save(self) -> None:
        if self.index is not None:
            self.index.save()


def check_mode(mode: str, name: str = "corpus") -> str:
    """``mode`` when it is one of :data:`MODES`, else a :class:`bench.config.ConfigError`."""
    if mode not in MODES:
        from bench.config import ConfigError

        raise ConfigError(f"{skip_key(name).split('.')[0]}.validate={mode!r} is not allowed; choices: {', '.join(MODES)}")
    return mode


DUPLICATE = "listed more than once (it could enroll and be the target of one mixture)"


def duplicates(corpus: Any) -> dict[str, str]:
    """``{utt_id: "utt_id (path, as first_id)"}`` for every utterance whose audio file an utterance
    earlier in id order already lists (the same path, however it is written)."""
    from bench.data.fileindex import Resolver

    first: dict[str, str] = {}
    out: dict[str, str] = {}
    resolve = Resolver()
    for u in corpus.utterances:
        path = resolve(corpus.path_of(u.utt_id))
        owner = first.setdefault(path, u.utt_id)
        if owner != u.utt_id:
            out[u.utt_id] = f"{u.utt_id} ({path}, as {owner})"
    return out


def problems(corpus: Any, eval_splits: tuple[str | None, ...] = ("val", "test"),
             train: bool = True, mode: str = "decode", cache: Any = None) -> dict[str, list[str]]:
    """Every problem of ``corpus``: ``{kind: [utterance or speaker ids]}`` (empty when usable).
    ``eval_splits`` are the splits targets are drawn from (None: every speaker); ``train``: the
    corpus also trains (its train split needs speakers); ``mode``: ``decode`` every file or trust
    its ``header`` (see the module docstring; ``cache``: where headers are remembered). A second
    listing of a file is not a usable utterance of its speaker."""
    out: dict[str, list[str]] = defaultdict(list)
    good: dict[str, list[str]] = defaultdict(list)
    twice = duplicates(corpus)
    header = HeaderCheck(cache) if check_mode(mode) == "header" else None
    for u in corpus.utterances:
        if u.utt_id in twice:
            out[f"file {DUPLICATE}"].append(twice[u.utt_id])
            continue
        why = header(corpus.path_of(u.utt_id)) if header is not None else _audio_problem(corpus, u.utt_id)
        if why:
            out[f"file {why}"].append(f"{u.utt_id} ({corpus.path_of(u.utt_id)})")
        else:
            good[u.speaker].append(u.utt_id)
    for split in eval_splits:
        for spk in corpus.speakers(split):
            if len(good.get(spk, [])) < 2:
                out["speaker with fewer than 2 usable utterances (enrollment + test target)"].append(spk)
    for split in (("train",) if train else ()) + tuple(eval_splits):
        usable = [s for s in corpus.speakers(split) if len(good.get(s, [])) >= (2 if split != "train" else 1)]
        if len(usable) < MIN_SPEAKERS:
            label = split or "all"
            out[f"split {label!r} has {len(usable)} usable speaker(s), needs {MIN_SPEAKERS}"].append(label)
    if header is not None:
        header.save()
    return dict(out)


def skip_key(name: str) -> str:
    """The config key that leaves the bad files of corpus ``name`` out."""
    return f"{name if name in ('corpus', 'test_corpus') else 'corpus'}.skip_bad"


def report(found: dict[str, list[str]], name: str) -> str:
    lines = [f"corpus {name!r} is not usable as it is:"]
    for kind, items in found.items():
        shown = ", ".join(items[:SHOW]) + (f", ... ({len(items) - SHOW} more)" if len(items) > SHOW else "")
        lines.append(f"  - {len(items)} x {kind}: {shown}")
    lines.append(f"  fix the files, or set {skip_key(name)}=true to leave them out (one warning)")
    return "\n".join(lines)


def _markers(cache: Any, corpus: Any, eval_splits: tuple[str | None, ...], train: bool, mode: str) -> list[Any]:
    """The files that say ``corpus`` passed: the decode mode's (also enough for ``header``) and,
    in header mode, the header mode's own (written when it passes)."""
    from bench.cache import config_hash

    decoded = cache.root / "validated" / config_hash(corpus.key, eval_splits, train, MIN_UTT_S, SILENCE_DBFS)
    if mode == "decode":
        return [decoded]
    return [cache.root / "validated" / config_hash(corpus.key, eval_splits, train, MIN_UTT_S, "header"), decoded]


def validate(corpus: Any, cache: Any = None, name: str = "corpus", skip_bad: bool = False,
             eval_splits: tuple[str | None, ...] = ("val", "test"), train: bool = True, mode: str = "decode") -> Any:
    """Check ``corpus`` (see the module docstring; ``mode``: ``header`` or ``decode``, the
    config's ``corpus.validate``). Returns it, or with ``skip_bad`` a copy without the bad files
    and speakers; raises :class:`CorpusError` otherwise."""
    from bench.data.audio_cache import DEFAULT_AUDIO_CACHE_MB
    from bench.data.corpus import Corpus, Utterance

    check_mode(mode, name)
    markers = _markers(cache, corpus, eval_splits, train, mode) if cache is not None else []
    marker = markers[0] if markers else None
    if any(m.is_file() for m in markers) and not duplicates(corpus):  # remembered before files were compared
        return corpus
    found = problems(corpus, eval_splits, train, mode, cache)
    if not found:
        if marker is not None:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("ok\n")
        return corpus
    fatal = {k: v for k, v in found.items() if k.startswith("split ")}
    if not skip_bad or fatal:
        raise CorpusError(report(found if not skip_bad else fatal, name))
    bad_files = {i.split(" ")[0] for k, v in found.items() if k.startswith("file ") for i in v}
    bad_spk = {s for k, v in found.items() if k.startswith("speaker ") for s in v}
    keep = [Utterance(**asdict(u)) for u in corpus.utterances if u.utt_id not in bad_files and u.speaker not in bad_spk]
    log.warning("%s: left out %d file(s) and %d speaker(s) (%s=true): %s", name, len(bad_files), len(bad_spk),
                skip_key(name), "; ".join(f"{len(v)} x {k}" for k, v in found.items()))
    slim = Corpus(corpus.root, corpus.manifest_path, keep, corpus.resample_dir, corpus.noise_files,
                  audio_cache_mb=getattr(corpus, "audio_cache_mb", DEFAULT_AUDIO_CACHE_MB))
    still = problems(slim, eval_splits, train, mode, cache)
    if still:
        raise CorpusError(report(still, name))
    return slim
