"""Dataset plugins for the manifests other toolkits keep corpora in: ``lhotse`` and ``nemo``.

- ``lhotse``: ``corpus.path`` is a Lhotse CutSet, or a RecordingSet with its SupervisionSet next
  to it (the same file name with ``recordings`` replaced by ``supervisions``, as Lhotse's recipes
  write them; a SupervisionSet given finds its RecordingSet the same way), in any format Lhotse
  reads (``.jsonl.gz``, ``.jsonl``, ``.json``). The speaker of an utterance is its supervisions'
  ``speaker`` (one per recording), its text their ``text``. Needs the optional ``lhotse``
  package (``pip install lhotse``).
- ``nemo``: ``corpus.path`` is a NeMo JSON-lines manifest (``.json`` / ``.jsonl``, optionally
  gzipped): ``audio_filepath``, ``speaker`` or ``label`` (the speaker-recognition manifests'
  field), optionally ``text``, ``duration``, ``offset``.

Each utterance is a whole audio file: a cut or a NeMo row that is part of a longer file
(``start`` / ``offset`` past 0 or a shorter duration) is refused with a message, and so are Lhotse
recordings that are not one plain file (URLs, commands, in-memory audio, per-channel files,
transforms such as speed perturbation). A row with a ``split`` field (Lhotse: the cut's, the
supervision's or the recording's ``custom["split"]``) keeps it when every row has one; otherwise
splits are assigned as for every user corpus. The rows then become a corpus exactly as the CSV
``manifest`` dataset's do (:func:`bench.data.loaders.corpus_from_rows`): the same files, speakers
and splits give the same utterance ids, the same audio and the same corpus key. Relative audio
paths are resolved as each toolkit does: Lhotse's against the working directory (then the
manifest's folder), NeMo's against the manifest's folder (then the working directory).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import registry
from bench.cache import Cache
from bench.data.corpus import Corpus
from bench.data.loaders import ManifestRow, _need_path, corpus_from_rows

log = logging.getLogger("bench")

LHOTSE_HINT = "the lhotse dataset needs the lhotse package: pip install lhotse (or pip install -e '.[lhotse]')"
WHOLE_TOL_S = 0.05  # a row may state its file's duration this much off (rounding) and still be the whole file


def _lhotse() -> Any:
    try:
        import lhotse
    except ImportError as exc:
        raise ImportError(f"{LHOTSE_HINT} ({exc})") from None
    return lhotse


def _resolve(p: str, first: Path, then: Path) -> Path:
    """``p`` as is when absolute, else against ``first`` when that file exists, else ``then``."""
    path = Path(p).expanduser()
    if path.is_absolute():
        return path
    return first / path if (first / path).exists() else then / path


def _split_of(*customs: Any) -> str:
    for c in customs:
        if isinstance(c, dict) and str(c.get("split") or "").strip():
            return str(c["split"]).strip()
    return ""


def _licence_of(*customs: Any) -> str:
    for c in customs:
        if isinstance(c, dict):
            for k in ("licence", "license"):
                if c.get(k):
                    return str(c[k])
    return ""


# --------------------------------------------------------------------------- lhotse
def _recording_file(rec: Any, where: str, base: Path) -> Path:
    """The one audio file of a Lhotse recording (refusing anything else)."""
    srcs = list(rec.sources or [])
    if len(srcs) != 1 or srcs[0].type != "file":
        kinds = ", ".join(sorted({s.type for s in srcs})) or "none"
        raise ValueError(f"{where}: recording {rec.id!r} is not one audio file (sources: {len(srcs)}, "
                         f"{kinds}); the suite reads whole files: write the audio to files first")
    if rec.transforms:
        raise ValueError(f"{where}: recording {rec.id!r} has transforms ({len(rec.transforms)}, e.g. speed or "
                         "resampling); the suite reads the file as it is: save the transformed audio first")
    if rec.num_channels > 1:
        raise ValueError(f"{where}: recording {rec.id!r} has {rec.num_channels} channels; the suite averages a "
                         "file's channels, Lhotse reads them apart: give mono recordings")
    return _resolve(str(srcs[0].source), Path.cwd(), base)


def _speaker(sups: list[Any], where: str, what: str) -> str:
    spk = sorted({str(s.speaker) for s in sups if s.speaker})
    if len(spk) > 1:
        raise ValueError(f"{where}: {what} has supervisions of {len(spk)} speakers ({', '.join(spk[:3])}); "
                         "an utterance is one speaker's")
    return spk[0] if spk else ""


def _text(sups: list[Any]) -> str:
    return " ".join(str(s.text).strip() for s in sorted(sups, key=lambda s: s.start) if s.text)


def _partner(path: Path, have: str, want: str) -> Path:
    """The other file of a RecordingSet / SupervisionSet pair (``have`` -> ``want`` in the name)."""
    if have not in path.name:
        raise ValueError(f"lhotse manifest {path}: a {have[:-1]} set, but its name lacks {have!r}, so the "
                         f"{want} set next to it cannot be found; name them *_{have}_*.jsonl.gz and "
                         f"*_{want}_*.jsonl.gz, or give a CutSet")
    other = path.with_name(path.name.replace(have, want))
    if not other.is_file():
        raise FileNotFoundError(f"lhotse manifest {path}: its {want} set {str(other)!r} is not there")
    return other


def _cut_rows(cuts: Any, path: Path) -> Iterator[ManifestRow]:
    for i, cut in enumerate(cuts):
        where = f"lhotse manifest {path} cut {i + 1} ({cut.id})"
        rec = getattr(cut, "recording", None)
        if type(cut).__name__ != "MonoCut" or rec is None:
            raise ValueError(f"{where}: a {type(cut).__name__} without one recording; give MonoCuts of recordings")
        if abs(cut.start) > WHOLE_TOL_S or abs(cut.duration - rec.duration) > WHOLE_TOL_S:
            raise ValueError(f"{where}: the cut is {cut.start:g}-{cut.end:g} s of a {rec.duration:g} s recording; "
                             "the suite uses whole files: cut them to files first (or give whole-recording cuts)")
        sups = list(cut.supervisions)
        yield ManifestRow(path=_recording_file(rec, where, path.parent), speaker=_speaker(sups, where, "the cut"),
                          where=where, text=_text(sups),
                          split=_split_of(cut.custom, *(s.custom for s in sups)),
                          licence=_licence_of(cut.custom, *(s.custom for s in sups)))


def _recording_rows(recs: Any, sups: Any, path: Path) -> Iterator[ManifestRow]:
    by_rec: dict[str, list[Any]] = {}
    for s in sups:
        by_rec.setdefault(s.recording_id, []).append(s)
    for i, rec in enumerate(recs):
        where = f"lhotse manifest {path} recording {i + 1} ({rec.id})"
        ss = by_rec.get(rec.id, [])
        yield ManifestRow(path=_recording_file(rec, where, path.parent), speaker=_speaker(ss, where, "the recording"),
                          where=where, text=_text(ss), split=_split_of(*(s.custom for s in ss)),
                          licence=_licence_of(*(s.custom for s in ss)))


def lhotse_rows(path: Path) -> list[ManifestRow]:
    """The rows of a Lhotse CutSet, or of a RecordingSet + SupervisionSet pair (see the module
    docstring); rows without a speaker are left out (one warning)."""
    lhotse = _lhotse()
    data = lhotse.load_manifest_lazy(path) or lhotse.load_manifest(path)
    if isinstance(data, lhotse.CutSet):
        rows = list(_cut_rows(data, path))
    elif isinstance(data, (lhotse.RecordingSet, lhotse.SupervisionSet)):
        rec_path, sup_path = ((path, _partner(path, "recordings", "supervisions")) if isinstance(data, lhotse.RecordingSet)
                              else (_partner(path, "supervisions", "recordings"), path))
        recs, sups = lhotse.load_manifest_lazy(rec_path), lhotse.load_manifest_lazy(sup_path)
        rows = list(_recording_rows(recs, sups, rec_path))
    else:
        raise ValueError(f"lhotse manifest {path} holds a {type(data).__name__}; give a CutSet, or a "
                         "RecordingSet with its SupervisionSet")
    kept = [r for r in rows if r.speaker]
    if len(kept) < len(rows):
        log.warning("lhotse manifest %s: left out %d of %d utterances without a speaker (no supervision with "
                    "one), e.g. %s", path, len(rows) - len(kept), len(rows), next(r.where for r in rows if not r.speaker))
    return kept


@registry.register("dataset", "lhotse")
def lhotse_dataset(cfg, cache: Cache) -> Corpus:
    """A Lhotse CutSet, or RecordingSet + SupervisionSet (``corpus.path``: the file)."""
    path = _need_path(cfg, "lhotse")
    _lhotse()  # the install hint before anything else
    if path.is_dir():
        raise ValueError(f"corpus.path {str(path)!r} is a folder; the lhotse dataset reads one manifest file (a "
                         "CutSet, or a RecordingSet next to its SupervisionSet; join parts with `lhotse combine`)")
    return corpus_from_rows("lhotse", cfg, cache, lhotse_rows(path))


# --------------------------------------------------------------------------- nemo
def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"nemo manifest {path} line {i}: not JSON ({exc.msg}); NeMo manifests hold one "
                                 "JSON object per line") from None
            if not isinstance(row, dict):
                raise ValueError(f"nemo manifest {path} line {i}: a JSON {type(row).__name__}, not an object")
            yield i, row


def nemo_rows(path: Path) -> list[ManifestRow]:
    """The rows of a NeMo JSON-lines manifest (see the module docstring)."""
    import soundfile as sf

    rows = []
    try:
        lines = list(_json_lines(path))
    except UnicodeDecodeError as exc:
        raise ValueError(f"nemo manifest {path} is not UTF-8 ({exc.reason}); save it as UTF-8") from None
    for i, r in lines:
        where = f"nemo manifest {path} line {i}"
        if not r.get("audio_filepath"):
            raise ValueError(f"{where}: no audio_filepath")
        speaker = r.get("speaker") if r.get("speaker") not in (None, "") else r.get("label")
        if speaker in (None, ""):
            raise ValueError(f"{where}: no speaker (a 'speaker' or 'label' field names it)")
        audio = _resolve(str(r["audio_filepath"]), path.parent, Path.cwd())
        offset = float(r.get("offset") or 0.0)
        if abs(offset) > WHOLE_TOL_S:
            raise ValueError(f"{where}: offset {offset:g} s: the row is part of {str(audio)!r}; the suite uses whole "
                             "files: cut the segments to files first")
        if r.get("duration") is not None and audio.is_file():
            try:
                info = sf.info(str(audio))
                whole = info.frames / info.samplerate
            except (RuntimeError, OSError):  # unreadable: reported (or skipped) with the others
                whole = None
            if whole is not None and float(r["duration"]) < whole - max(WHOLE_TOL_S, 0.01 * whole):
                raise ValueError(f"{where}: duration {float(r['duration']):g} s of a {whole:g} s file: the row is "
                                 "part of it; the suite uses whole files: cut the segments to files first")
        rows.append(ManifestRow(path=audio, speaker=str(speaker), where=where, text=str(r.get("text") or ""),
                                split=str(r.get("split") or "").strip(),
                                licence=str(r.get("licence") or r.get("license") or "")))
    return rows


@registry.register("dataset", "nemo")
def nemo_dataset(cfg, cache: Cache) -> Corpus:
    """A NeMo JSON-lines manifest (``corpus.path``: the file)."""
    path = _need_path(cfg, "nemo")
    return corpus_from_rows("nemo", cfg, cache, nemo_rows(path))
