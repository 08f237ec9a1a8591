"""Speech corpora: utterance records, manifest CSV I/O, speaker-disjoint splits, loading.

A corpus is a directory (``root``) with a ``manifest.csv``; every row is one
:class:`Utterance`. Audio is read on demand, mono float32 at 16 kHz: :meth:`Corpus.audio` (a
whole utterance), :meth:`Corpus.crop` / :meth:`Corpus.segment` (a piece of one) and
:meth:`Corpus.frames` / :meth:`Corpus.power` (its length and mean power). Decoded waveforms are
kept in RAM up to a byte budget per process (``corpus.audio_cache_mb``, least recently used
evicted first; :mod:`bench.data.audio_cache`); a piece of an utterance that is not held is read
from its file alone where the format gives the same samples that way, else the file is decoded
whole. What a crop holds never depends on the budget. Files stored at another rate are resampled
once and cached as 16 kHz float WAV under ``resample_dir`` (keyed by the source's path, size,
modification and change times and inode); pieces are then read from that copy.

Splits are speaker-disjoint and grouped by *parent voice*: a derived speaker (speed / pitch
perturbed copy of a voice, ``kind == "derived"``) always lands in the same split as its
parent, so no voice leaks between train, validation and test.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from bench.audio import SR
from bench.cache import Cache, atomic_path, config_hash, file_hash, file_stamp
from bench.data.audio_cache import (
    DEFAULT_AUDIO_CACHE_MB,
    AudioCache,
    budget_bytes,
    exact_partial,
    read_frames,
)

SPLITS = ("train", "val", "test")
KINDS = ("real", "tts", "derived")


@dataclass
class Utterance:
    """One utterance of a corpus (a row of ``manifest.csv``).

    Attributes:
        utt_id: unique id.
        path: audio file, relative to the corpus root (or absolute).
        speaker: speaker id (unique over the corpus).
        source: where the audio comes from (``flite:slt``, ``asterisk-core-sounds-en``, ...).
        kind: ``real`` (recorded human), ``tts`` (synthesized) or ``derived`` (perturbed copy).
        licence: licence of the source audio.
        native_sample_rate: sample rate of the source before conversion to 16 kHz.
        duration_s: duration in seconds.
        split: ``train``, ``val`` or ``test``.
        text: transcript or prompt names (may be empty).
        parent_speaker: for derived speakers the speaker they derive from, else empty.
    """

    utt_id: str
    path: str
    speaker: str
    source: str = ""
    kind: str = "real"
    licence: str = ""
    native_sample_rate: int = SR
    duration_s: float = 0.0
    split: str = "train"
    text: str = ""
    parent_speaker: str = ""


MANIFEST_COLUMNS = tuple(f.name for f in fields(Utterance))


# --------------------------------------------------------------------------- manifest I/O
def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write utterances to a CSV manifest atomically (rows sorted by ``utt_id``)."""
    rows = sorted(utterances, key=lambda u: u.utt_id)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
            w.writeheader()
            for u in rows:
                d = {k: getattr(u, k) for k in MANIFEST_COLUMNS}  # asdict's deep copy is slow at 100k rows
                d["duration_s"] = f"{u.duration_s:.4f}"
                w.writerow(d)


def read_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """The column names and rows of a UTF-8 CSV file (a leading byte-order mark, as spreadsheet
    programs write, is dropped).

    Raises:
        ValueError: the file is not UTF-8 (the message names the file and the row).
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"manifest {path} row {row} is not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file "
                         "as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return list(reader.fieldnames or []), list(reader)


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a manifest CSV written by :func:`write_manifest` (extra columns are ignored).

    Raises:
        ValueError: a required column (``utt_id``, ``path``, ``speaker``) is missing, or the file
            is not UTF-8.
    """
    path = Path(path)
    cols, rows = read_csv(path)
    missing = {"utt_id", "path", "speaker"} - set(cols)
    if missing:
        raise ValueError(f"manifest {path} lacks column(s) {sorted(missing)}")
    out = []
    for row in rows:
        kw = {k: row[k] for k in MANIFEST_COLUMNS if k in row and row[k] is not None}
        if "native_sample_rate" in kw:
            kw["native_sample_rate"] = int(float(kw["native_sample_rate"] or SR))
        if "duration_s" in kw:
            kw["duration_s"] = float(kw["duration_s"] or 0.0)
        out.append(Utterance(**kw))
    return out


# --------------------------------------------------------------------------- splits
def voice_group(u: Utterance, by_speaker: dict[str, Utterance] | None = None) -> str:
    """Root voice of an utterance's speaker (follows ``parent_speaker`` links)."""
    spk, parent = u.speaker, u.parent_speaker
    seen = {spk}
    while parent and by_speaker is not None and parent in by_speaker and parent not in seen:
        seen.add(parent)
        spk, parent = parent, by_speaker[parent].parent_speaker
    return parent or spk


def assign_splits(
    utterances: list[Utterance], val_frac: float, test_frac: float, seed: int
) -> dict[str, str]:
    """Speaker-disjoint split by parent voice group; sets ``u.split`` in place.

    Groups (a voice and all speakers derived from it) are stratified by the kind of their
    root voice (real vs synthetic) and greedily assigned, in a seeded random order, to the
    split whose speaker count is furthest below its target fraction. Deterministic for a
    seed and independent of the order of ``utterances``.

    Args:
        utterances: all utterances of the corpus (modified in place).
        val_frac: fraction of speakers in ``val``.
        test_frac: fraction of speakers in ``test``.
        seed: split seed.

    Returns:
        ``{speaker: split}``.
    """
    first: dict[str, Utterance] = {}
    for u in sorted(utterances, key=lambda x: x.utt_id):
        first.setdefault(u.speaker, u)
    groups: dict[str, list[str]] = {}
    for spk, u in sorted(first.items()):
        groups.setdefault(voice_group(u, first), []).append(spk)
    strata: dict[str, list[str]] = {}
    for g in sorted(groups):
        root = first.get(g)
        kind = "real" if root is not None and root.kind == "real" else "synthetic"
        strata.setdefault(kind, []).append(g)
    fracs = {"train": 1.0 - val_frac - test_frac, "val": val_frac, "test": test_frac}
    mapping: dict[str, str] = {}
    for kind in sorted(strata):
        gs = strata[kind]
        rng = np.random.default_rng([seed, int(hashlib.md5(kind.encode()).hexdigest()[:8], 16)])
        order = [gs[i] for i in rng.permutation(len(gs))]
        total = sum(len(groups[g]) for g in gs)
        count = dict.fromkeys(SPLITS, 0)
        for i, g in enumerate(order):
            n = len(groups[g])
            if i < 3 and len(order) >= 3:
                # make sure every split gets one group of each stratum when possible
                split = ("test", "val", "train")[i]
            else:
                split = max(SPLITS, key=lambda s: (fracs[s] * total - count[s], -SPLITS.index(s)))
            count[split] += n
            for spk in groups[g]:
                mapping[spk] = split
    for u in utterances:
        u.split = mapping[u.speaker]
    return mapping


# --------------------------------------------------------------------------- corpus
CONTENT_STAMP = "content.sha256"


def write_content_stamp(manifest_path: str | Path, utterances: list[Utterance], extra: list[Path] = ()) -> str:
    """Hash the bytes of every utterance's audio (and ``extra`` files) into ``content.sha256``.

    Written by corpus builders next to the manifest; :class:`Corpus` folds it into its ``key``.
    Returns the hex digest.
    """
    manifest_path = Path(manifest_path)
    root = manifest_path.parent
    parts = [(u.utt_id, file_hash(root / u.path)) for u in sorted(utterances, key=lambda u: u.utt_id)]
    parts += [(Path(p).name, file_hash(p)) for p in sorted(extra)]
    digest = config_hash(parts, length=64)
    (root / CONTENT_STAMP).write_text(digest + "\n")
    return digest


class Corpus:
    """A manifest-backed speech corpus.

    Args (besides the attributes):
        audio_cache_mb: budget of decoded audio this object keeps in RAM, MiB (None: no bound;
            0: nothing kept). The same audio comes out at any budget.

    Attributes:
        root: directory that relative manifest paths are resolved against.
        manifest_path: the CSV file.
        utterances: list of :class:`Utterance` (sorted by ``utt_id``).
        key: content hash (manifest content + split assignment); changes when either does.
        noise_files: non-speech noise WAVs (16 kHz) shipped with the corpus, possibly empty.
    """

    def __init__(
        self,
        root: str | Path,
        manifest_path: str | Path | None = None,
        utterances: list[Utterance] | None = None,
        resample_dir: str | Path | None = None,
        noise_files: list[Path] | None = None,
        audio_cache_mb: float | None = DEFAULT_AUDIO_CACHE_MB,
    ) -> None:
        self.root = Path(root)
        self.manifest_path = Path(manifest_path) if manifest_path else self.root / "manifest.csv"
        if utterances is None:
            utterances = read_manifest(self.manifest_path)
        self.utterances = sorted(utterances, key=lambda u: u.utt_id)
        self.resample_dir = Path(resample_dir) if resample_dir else None
        if noise_files is None:
            nd = self.root / "noise"
            noise_files = sorted(nd.glob("*.wav")) if nd.is_dir() else []
        self.noise_files = list(noise_files)
        self._by_id = {u.utt_id: u for u in self.utterances}
        if len(self._by_id) != len(self.utterances):
            raise ValueError(f"duplicate utt_id in {self.manifest_path}")
        self._by_spk: dict[str, list[Utterance]] = {}
        for u in self.utterances:
            self._by_spk.setdefault(u.speaker, []).append(u)
        # decoded audio under the byte budget: utterances by utt_id (str), noise files by index (int)
        self.audio_cache_mb = audio_cache_mb
        self._cache = AudioCache(budget_bytes(audio_cache_mb))
        self._frames: dict[str | int, int] = {}
        self._power: dict[str | int, float] = {}
        self._partial: dict[str | int, str | None] = {}  # the file a piece is read from; None: whole reads
        base = file_hash(self.manifest_path) if self.manifest_path.is_file() else ""
        # A builder that knows its audio bytes (the embedded corpus) leaves their hash next to
        # the manifest, so a rebuild with different audio (another sox, say) is another corpus.
        stamp = self.manifest_path.parent / CONTENT_STAMP
        content = stamp.read_text().strip() if stamp.is_file() else ""
        self.key = config_hash(
            base, [(u.utt_id, u.path, u.speaker, u.split) for u in self.utterances], *([content] if content else [])
        )

    def __len__(self) -> int:
        return len(self.utterances)

    def __repr__(self) -> str:
        return (
            f"Corpus({self.root}, {len(self.utterances)} utts, "
            f"{len(self._by_spk)} speakers, key={self.key})"
        )

    def utt(self, utt_id: str) -> Utterance:
        """The :class:`Utterance` with this id (KeyError if unknown)."""
        return self._by_id[utt_id]

    def speakers(self, split: str | None = None) -> list[str]:
        """Sorted speaker ids of ``split`` (all splits if None).

        Raises:
            ValueError: unknown split name.
        """
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choices: {', '.join(SPLITS)}")
        return sorted(
            s for s, us in self._by_spk.items() if split is None or us[0].split == split
        )

    def utts_of(self, speaker: str, split: str | None = None) -> list[Utterance]:
        """Utterances of ``speaker`` (sorted by id), optionally restricted to ``split``."""
        us = self._by_spk.get(speaker, [])
        return [u for u in us if split is None or u.split == split]

    def path_of(self, utt_id: str) -> Path:
        """Absolute path of an utterance's audio file."""
        p = Path(self._by_id[utt_id].path)
        return p if p.is_absolute() else self.root / p

    # ---------------------------------------------------------------- audio
    def set_audio_cache_mb(self, mb: float | None) -> None:
        """Change the decoded-audio budget (MiB; None: no bound), evicting at once when it shrinks."""
        self.audio_cache_mb = mb
        self._cache.set_budget(budget_bytes(mb))

    def audio_cache_stats(self) -> dict[str, int | None]:
        """What the decoded-audio cache holds now: ``nbytes``, ``peak``, ``budget``, ``items``, counts."""
        return self._cache.stats()

    def audio(self, utt_id: str) -> np.ndarray:
        """Waveform ``[T]`` float32 at 16 kHz (read-only; kept within the budget)."""
        self._by_id[utt_id]  # KeyError for an unknown id
        return self._whole(utt_id)

    def frames(self, utt_id: str) -> int:
        """Length of :meth:`audio` in samples, from the file's header where a piece of it can be read
        exactly (nothing decoded), else from the decoded audio."""
        self._by_id[utt_id]
        return self._length(utt_id)

    def power(self, utt_id: str) -> float:
        """Mean power of the whole utterance (:func:`bench.data.pieces.power` of :meth:`audio`),
        memoised (a few bytes per utterance)."""
        self._by_id[utt_id]
        return self._mean_power(utt_id)

    def crop(self, utt_id: str, start: int, n: int) -> np.ndarray:
        """``fit_length(audio(utt_id), n, start)`` (:func:`bench.data.pieces.fit_length`:
        ``n`` samples from ``start``, the utterance looped when it ends first), float32 ``[n]``,
        read from the file alone when the utterance is not held (see the module docstring)."""
        self._by_id[utt_id]
        return self._crop(utt_id, int(start), int(n))

    def segment(self, utt_id: str, start: int, end: int) -> np.ndarray:
        """``audio(utt_id)[start:end]`` zero-padded to ``end - start`` samples
        (:func:`bench.metrics.speaker.crop_audio`), float32, read like :meth:`crop`."""
        self._by_id[utt_id]
        return self._segment(utt_id, int(start), int(end))

    def noise(self, index: int) -> np.ndarray:
        """Noise sample ``index`` of :attr:`noise_files` as ``[T]`` float32 at 16 kHz (read-only)."""
        self.noise_files[index]  # IndexError for an unknown one
        return self._whole(int(index))

    def noise_frames(self, index: int) -> int:
        """Length of :meth:`noise` in samples."""
        self.noise_files[index]
        return self._length(int(index))

    def noise_crop(self, index: int, start: int, n: int) -> np.ndarray:
        """``fit_length(noise(index), n, start)``, read like :meth:`crop`."""
        self.noise_files[index]
        return self._crop(int(index), int(start), int(n))

    def _whole(self, key: str | int) -> np.ndarray:
        x = self._cache.get(key)
        if x is None:
            try:
                x = self._load(key) if isinstance(key, str) else self._load_noise(key)
            except (RuntimeError, OSError) as exc:  # soundfile's errors are RuntimeErrors
                raise self._read_error(key, exc) from exc
            if isinstance(key, str):
                self._check_samples(key, x)
            x.setflags(write=False)
            self._cache.put(key, x)
            self._frames[key] = len(x)
        return x

    def _length(self, key: str | int) -> int:
        n = self._frames.get(key)
        if n is None:
            self._partial_path(key)  # records the header's frame count where pieces read exactly
            n = self._frames.get(key)
        return n if n is not None else len(self._whole(key))

    def _mean_power(self, key: str | int) -> float:
        p = self._power.get(key)
        if p is None:
            from bench.data.pieces import power

            p = self._power[key] = power(self._whole(key))
        return p

    def _crop(self, key: str | int, start: int, n: int) -> np.ndarray:
        from bench.data.pieces import fit_length

        x = self._cache.get(key)
        if x is None and start >= 0 and n >= 0:
            path = self._partial_path(key)
            if path is not None and self._frames[key] - start >= n:
                y = self._read_frames(key, path, start, n)
                if len(y) == n:
                    return y
        return fit_length(self._whole(key) if x is None else x, n, start)

    def _segment(self, key: str | int, start: int, end: int) -> np.ndarray:
        x = self._cache.get(key)
        if x is None and start >= 0:
            path = self._partial_path(key)
            if path is not None:
                stop = min(end, self._frames[key])
                y = self._read_frames(key, path, start, max(0, stop - start))
                if len(y) == max(0, stop - start):
                    return np.pad(y, (0, end - start - len(y))) if len(y) < end - start else y
        x = self._whole(key) if x is None else x
        seg = np.asarray(x[max(start, 0):end], dtype=np.float32)
        return np.pad(seg, (0, end - start - len(seg))) if len(seg) < end - start else seg.copy()

    def _read_frames(self, key: str | int, path: str, start: int, n: int) -> np.ndarray:
        try:
            return read_frames(path, start, n)
        except (RuntimeError, OSError) as exc:
            raise self._read_error(key, exc) from exc

    def _check_samples(self, utt_id: str, x: np.ndarray) -> None:
        """Refuse decoded audio no mixture can use (NaN, inf, silence), naming the file: what
        validation by headers leaves to the first read (``bench.data.validate.samples_problem``)."""
        from bench.data.audio_checks import BadAudio, samples_problem

        why = samples_problem(x)
        if why:
            raise BadAudio(
                f"audio file {str(self.path_of(utt_id))!r} (utterance {utt_id!r}) is {why}. Validation by headers "
                "(corpus.validate=header, the default) does not decode files; run with corpus.validate=decode "
                "(test_corpus.validate for a test corpus) to find every such file before anything trains, then "
                "fix or remove them, or add skip_bad=true to leave them out", why, x)

    def _read_error(self, key: str | int, exc: Exception) -> Exception:
        """A :class:`~bench.data.validate.CorpusError` naming the file of ``key`` that failed to
        decode (validation by headers, ``corpus.validate: header``, does not decode files)."""
        from bench.data.audio_checks import CorpusError

        src = self.path_of(key) if isinstance(key, str) else Path(self.noise_files[key])
        what = f"utterance {key!r}" if isinstance(key, str) else f"noise file {key}"
        return CorpusError(
            f"audio file {str(src)!r} ({what}) cannot be decoded: {exc}. Its header reads, so validation by "
            "headers (corpus.validate=header, the default) let it through; run with corpus.validate=decode "
            "(test_corpus.validate for a test corpus) to find every such file before anything trains, then fix "
            "or remove them, or add skip_bad=true to leave them out")

    def _partial_path(self, key: str | int) -> str | None:
        """The file pieces of ``key`` are read from exactly (recording its frame count), or None."""
        if key in self._partial:
            return self._partial[key]
        src = self.path_of(key) if isinstance(key, str) else Path(self.noise_files[key])
        if isinstance(key, str) and self._resampled(key):
            cached = self._resampled_copy(src)
            if not cached.is_file():
                return None  # pieces come from the copy the first whole read writes
            src = cached
        frames = exact_partial(src)
        path = None if frames is None else str(src)
        self._partial[key] = path
        if frames is not None:
            self._frames.setdefault(key, frames)
        return path

    def _resampled(self, utt_id: str) -> bool:
        return self.resample_dir is not None and self._by_id[utt_id].native_sample_rate != SR

    def _resampled_copy(self, src: Path) -> Path:
        # float WAV: the cached copy is bit-identical to the first resampling; keyed by the
        # source's path, size, mtime, ctime and inode, so a file replaced or changed in place
        # is resampled again, even with its mtime set back (touch -r)
        assert self.resample_dir is not None
        return self.resample_dir / f"{config_hash(str(src.resolve()), *file_stamp(src))}.wav"

    def _load(self, utt_id: str) -> np.ndarray:
        import soundfile as sf

        from bench.audio import load

        src = self.path_of(utt_id)
        if self._resampled(utt_id):
            cached = self._resampled_copy(src)
            if cached.is_file():
                return load(cached)
            x = load(src)
            with atomic_path(cached) as tmp:
                sf.write(str(tmp), x, SR, format="WAV", subtype="FLOAT")
            return x
        return load(src)

    def _load_noise(self, index: int) -> np.ndarray:
        from bench.audio import load

        return load(self.noise_files[index])

    def summary(self) -> dict[str, float | int]:
        """Counts: speakers per kind and split, utterances, minutes of audio."""
        kinds = {k: 0 for k in KINDS}
        for us in self._by_spk.values():
            kinds[us[0].kind] = kinds.get(us[0].kind, 0) + 1
        out: dict[str, float | int] = {
            "speakers": len(self._by_spk),
            "utterances": len(self.utterances),
            "minutes": round(sum(u.duration_s for u in self.utterances) / 60.0, 2),
        }
        out.update({f"speakers_{k}": v for k, v in kinds.items()})
        out.update({f"speakers_{s}": len(self.speakers(s)) for s in SPLITS})
        return out


def resplit(corpus: Corpus, val_frac: float, test_frac: float, seed: int) -> Corpus:
    """Return ``corpus`` with its split recomputed (speaker-disjoint, by voice group)."""
    utts = [Utterance(**asdict(u)) for u in corpus.utterances]
    assign_splits(utts, val_frac, test_frac, seed)
    return Corpus(corpus.root, corpus.manifest_path, utts, corpus.resample_dir, corpus.noise_files,
                  audio_cache_mb=corpus.audio_cache_mb)


def load_corpus(cfg, cache: Cache) -> Corpus:
    """Load the corpus named by ``cfg.name`` through the ``dataset`` registry.

    Args:
        cfg: :class:`bench.config.CorpusConfig`.
        cache: artifact cache (corpora are built / indexed under ``<cache>/corpus``).
    """
    from bench import registry

    corpus = registry.get("dataset", cfg.name)(cfg, cache)
    mb = getattr(cfg, "audio_cache_mb", None)
    if mb is not None and hasattr(corpus, "set_audio_cache_mb"):  # a plugin's own corpus class may not
        corpus.set_audio_cache_mb(mb)
    return corpus
