"""Dataset plugins for users' corpora: ``librispeech``, ``voxceleb``, ``manifest``.

- ``librispeech``: ``<path>/<speaker>/<chapter>/*.flac`` (+ ``<speaker>-<chapter>.trans.txt``).
  ``path`` may also be a parent holding several subsets (``train-clean-100/``, ...).
- ``voxceleb``: ``<path>/[wav/]id*/<video>/*.wav`` (convert ``.m4a`` to WAV first).
- ``manifest``: a CSV file with columns ``path``, ``speaker`` and optionally ``text``,
  ``split``, ``licence``; relative paths are resolved against the CSV's directory.

Lhotse and NeMo manifests (:mod:`bench.data.manifests`) become :class:`ManifestRow` rows too and
go through :func:`corpus_from_rows`, as the CSV's rows do.

Every loader writes an index manifest under ``<cache>/corpus_index/<hash>/`` and returns a
:class:`~bench.data.corpus.Corpus` whose :meth:`~bench.data.corpus.Corpus.audio` yields 16 kHz
audio at any source rate (resampled copies are cached under ``<cache>/resampled/``, keyed by
the source path hash). Sources without a split (all but a manifest with a ``split`` column)
get a speaker-disjoint split from ``cfg.seed``, ``cfg.val_speakers`` and ``cfg.test_speakers``.

Importing this module also imports :mod:`bench.data.embedded`; the registry imports it and
:mod:`bench.data.manifests`, so ``registry.names("dataset")`` lists every built-in dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import registry
from bench.audio import SR
from bench.cache import Cache, config_hash
from bench.data import embedded  # noqa: F401  (registers the "embedded" dataset)
from bench.data.corpus import SPLITS, Corpus, Utterance, assign_splits, read_csv, write_manifest
from bench.data.fileindex import AudioInfoIndex, Resolver

AUDIO_EXTS = (".wav", ".flac", ".ogg")


def _section(cfg) -> str:
    """The config section of this corpus: ``test_corpus`` or ``corpus``."""
    from bench.config import TestCorpusConfig

    return "test_corpus" if isinstance(cfg, TestCorpusConfig) else "corpus"


def _info(path: Path, cfg, where: str = "", index: AudioInfoIndex | None = None,
          resolved: str | None = None) -> tuple[int, float]:
    """Sample rate and duration of an audio file (from ``index`` while the file is unchanged;
    ``resolved``: its resolved path, the index's key). One that cannot be read (empty, not audio)
    is a :class:`~bench.data.validate.CorpusError` naming it (``where``: the manifest row), or with
    ``skip_bad`` a duration of 0: validation then leaves it out with the other bad files."""
    import soundfile as sf

    from bench.cache import file_stamp
    from bench.data.validate import CorpusError, skip_key

    key = stamp = None
    if index is not None:
        key, stamp = resolved or str(Path(path).resolve()), file_stamp(path)
        got = index.get(key, stamp)
        if got is not None:
            return got[0], got[1] / got[0]
    try:
        i = sf.info(str(path))
    except (RuntimeError, OSError) as exc:  # soundfile's errors are RuntimeErrors
        if cfg.skip_bad:
            return SR, 0.0
        why = "is empty (0 bytes)" if path.stat().st_size == 0 else f"is not readable audio ({exc})"
        raise CorpusError(f"{where}audio file {str(path)!r} {why}; fix or remove it, or set {skip_key(_section(cfg))}=true "
                          "to leave it out") from None
    if index is not None and key is not None and stamp is not None and i.samplerate > 0:
        index.put(key, stamp, i.samplerate, i.frames)
    return int(i.samplerate), i.frames / i.samplerate


def _need_path(cfg, kind: str) -> Path:
    if not cfg.path:
        raise ValueError(f"corpus.path is empty; the {kind!r} dataset needs the corpus location")
    p = Path(cfg.path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"corpus.path {str(p)!r} does not exist ({kind} dataset)")
    return p


def content_digest(files: list[Path], cache: Cache) -> str:
    """SHA-256 over the bytes of ``files`` (in order), cheaply: a file whose stamp (size, mtime,
    ctime, inode: :func:`~bench.cache.file_stamp`) is unchanged since it was last hashed is not
    read again (``<cache>/filehash/index.json``, ``[size, mtime, digest, ctime, inode]`` per file).
    The digest is of the bytes alone: hashed again, an unchanged file gives the same corpus key."""
    import json

    from bench.cache import atomic_write_json, file_hash, file_stamp

    index_path = cache.root / "filehash" / "index.json"
    try:
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        index = {}  # a damaged index only costs re-hashing
    parts, changed = [], False
    resolve = Resolver()
    for f in files:
        size, mtime, ctime, ino = file_stamp(f)
        k = resolve(f)
        rec = index.get(k)
        if isinstance(rec, list) and len(rec) == 5 and rec[:2] == [size, mtime] and rec[3:] == [ctime, ino]:
            digest = rec[2]
        else:  # new, changed, or recorded before ctime and inode were (hashed once more)
            digest = file_hash(f, 64)
            index[k] = [size, mtime, digest, ctime, ino]
            changed = True
        parts.append((k, digest))
    if changed:
        atomic_write_json(index_path, index)
    return config_hash(parts, length=64)


def _finish(name: str, cfg, cache: Cache, utts: list[Utterance], has_split: bool) -> Corpus:
    if not utts:
        raise ValueError(f"no audio found for the {name!r} dataset under {cfg.path!r}")
    if not has_split:
        assign_splits(utts, cfg.val_speakers, cfg.test_speakers, cfg.seed)
    key = config_hash(name, str(Path(cfg.path).resolve()), cfg.seed, cfg.val_speakers,
                      cfg.test_speakers)
    d = cache.root / "corpus_index" / key
    manifest = d / "manifest.csv"
    write_manifest(manifest, utts)
    # the audio bytes are part of the corpus key: replaced files are another corpus
    from bench.cache import atomic_write_text
    from bench.data.corpus import CONTENT_STAMP

    atomic_write_text(d / CONTENT_STAMP, content_digest([Path(u.path) for u in utts], cache) + "\n")
    return Corpus(d, manifest, utts, resample_dir=cache.root / "resampled")


@registry.register("dataset", "librispeech")
def librispeech(cfg, cache: Cache) -> Corpus:
    """LibriSpeech-style corpus: ``<path>/<speaker>/<chapter>/*.flac`` with ``*.trans.txt``."""
    root = _need_path(cfg, "librispeech")
    texts: dict[str, str] = {}
    for t in sorted(root.rglob("*.trans.txt")):
        for line in t.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                uid, _, txt = line.strip().partition(" ")
                texts[uid] = txt
    utts = []
    resolve, index = Resolver(), AudioInfoIndex(cache.root)
    for f in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS):
        speaker = f.parent.parent.name
        real = resolve(f)
        sr, dur = _info(f, cfg, index=index, resolved=real)
        utts.append(Utterance(
            utt_id=f.stem, path=real, speaker=speaker, source="librispeech",
            kind="real", licence="CC-BY-4.0 (LibriSpeech)", native_sample_rate=sr,
            duration_s=dur, text=texts.get(f.stem, ""),
        ))
    index.save()
    return _finish("librispeech", cfg, cache, utts, has_split=False)


@registry.register("dataset", "voxceleb")
def voxceleb(cfg, cache: Cache) -> Corpus:
    """VoxCeleb-style corpus: ``<path>/[wav/]id*/<video>/*.wav``."""
    root = _need_path(cfg, "voxceleb")
    utts = []
    resolve, index = Resolver(), AudioInfoIndex(cache.root)
    for f in sorted(root.rglob("*.wav")):
        spk_dir = f.parent.parent
        if not spk_dir.name.startswith("id"):
            continue
        real = resolve(f)
        sr, dur = _info(f, cfg, index=index, resolved=real)
        utts.append(Utterance(
            utt_id=f"{spk_dir.name}-{f.parent.name}-{f.stem}", path=real,
            speaker=spk_dir.name, source="voxceleb", kind="real",
            licence="CC-BY-4.0 (VoxCeleb)", native_sample_rate=sr, duration_s=dur,
        ))
    index.save()
    if not utts and any(root.rglob("*.m4a")):
        raise ValueError(f"{root} holds .m4a files only; convert them to WAV (e.g. ffmpeg -i x.m4a x.wav)")
    return _finish("voxceleb", cfg, cache, utts, has_split=False)


@dataclass(frozen=True)
class ManifestRow:
    """One utterance as a manifest lists it (CSV, Lhotse, NeMo), before its file is read.

    Attributes:
        path: the audio file (absolute, or relative to the working directory).
        speaker: speaker id.
        where: the row, for messages (``manifest <file> row <n>``).
        text: transcript (may be empty).
        split: ``train`` / ``val`` / ``test``, or empty (then every row's split is assigned).
        licence: licence of the audio (may be empty).
    """

    path: Path
    speaker: str
    where: str
    text: str = ""
    split: str = ""
    licence: str = ""


def corpus_from_rows(name: str, cfg, cache: Cache, rows: list[ManifestRow]) -> Corpus:
    """The corpus of manifest rows: the same rows give the same corpus (the same utterance ids,
    splits and key) whichever manifest format listed them. Splits are the rows' own when every
    row has one, else assigned (speaker-disjoint, from ``cfg.seed``)."""
    utts = []
    has_split = bool(rows) and all(r.split for r in rows)
    seen: dict[str, int] = {}
    resolve, index = Resolver(), AudioInfoIndex(cache.root)
    for r in rows:
        p = r.path
        if not p.is_file():
            raise FileNotFoundError(f"{r.where}: audio file {str(p)!r} not found")
        split = r.split if has_split else "train"
        if split not in SPLITS:
            raise ValueError(f"{r.where}: split {split!r} not in {SPLITS}")
        real = resolve(p)
        sr, dur = _info(p, cfg, f"{r.where}: ", index, real)
        uid = f"{r.speaker}-{p.stem}"
        seen[uid] = seen.get(uid, 0) + 1
        if seen[uid] > 1:
            uid = f"{uid}-{seen[uid]}"
        utts.append(Utterance(
            utt_id=uid, path=real, speaker=str(r.speaker), source="manifest",
            kind="real", licence=r.licence, native_sample_rate=sr, duration_s=dur,
            split=split, text=r.text,
        ))
    index.save()
    return _finish(name, cfg, cache, utts, has_split=has_split)


@registry.register("dataset", "manifest")
def manifest(cfg, cache: Cache) -> Corpus:
    """CSV manifest with columns ``path``, ``speaker`` [, ``text``, ``split``, ``licence``]."""
    csv_path = _need_path(cfg, "manifest")
    base = csv_path.parent
    names, rows = read_csv(csv_path)
    cols = set(names)
    missing = {"path", "speaker"} - cols
    if missing:
        raise ValueError(f"manifest {csv_path} lacks column(s) {sorted(missing)}; "
                         "needs path, speaker [, text, split]")
    has_split = "split" in cols and all((r.get("split") or "").strip() for r in rows)
    out = []
    for i, r in enumerate(rows):
        p = Path(r["path"])
        out.append(ManifestRow(
            path=p if p.is_absolute() else base / p, speaker=str(r["speaker"]),
            where=f"manifest {csv_path} row {i + 2}", text=r.get("text") or "",
            split=(r.get("split") or "").strip() if has_split else "", licence=r.get("licence") or "",
        ))
    return corpus_from_rows("manifest", cfg, cache, out)
