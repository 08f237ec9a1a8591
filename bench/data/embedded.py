"""The embedded default corpus, built offline from Debian packages (dataset plugin ``embedded``).

Sources (see ``scripts/apt-packages.txt``):

- TTS: flite voices (kal16, awb, rms, slt), festival voices (ked, Czech x4, Italian x2,
  Finnish x2, Catalan; one festival process per voice), espeak-ng variants.
- Real recordings: Debian data packages fetched by the build with ``apt-get download`` into
  ``<cache>/debs`` and unpacked with ``dpkg-deb -x`` into ``<cache>/debs/root``: Asterisk core
  sounds (G.722, decoded with ffmpeg), Fish Fillets NG dialogue (two actors per language),
  Asterisk prompt packs (8 kHz, band-limited). Short prompts are concatenated into 2-6 s
  utterances.
- Derived speakers: speed (resampling: pitch + formants + tempo), pitch (sox ``pitch``) and
  formant (speed change with the pitch shifted back) perturbations of a parent voice.
- Noise: non-speech samples from ``sonic-pi-samples`` (16 kHz WAV under ``noise/``).

Layout: ``<cache>/corpus/<hash(size, seed, version)>/{audio/*.wav, noise/*.wav, manifest.csv,
parts/*.json, DONE}``. Every audio file and every per-source part is written atomically and
skipped when present, so an interrupted build resumes; a finished build is a no-op.
A missing source (no binary, package not downloadable) is skipped with one warning.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from bench import registry
from bench.audio import SR, load, resample, save
from bench.cache import Cache, atomic_write_json, config_hash
from bench.data.corpus import (
    Corpus,
    Utterance,
    assign_splits,
    resplit,
    write_content_stamp,
    write_manifest,
)
from bench.data.sentences import sentences

VERSION = 3  # 3: sox without dither (bit-exact rebuilds)
STAGE = "corpus"
MIN_SPEAKERS = 6


class CorpusBuildError(RuntimeError):
    """The embedded corpus cannot be built (too few speakers available)."""


# --------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """How much of each source to use."""

    tts_utts: int
    real_utts: int
    derived_utts: int
    flite: tuple[str, ...]
    festival: tuple[str, ...]
    espeak: int
    real: tuple[str, ...]
    derived_per_real: int
    derived_per_tts: int
    max_derived_tts_parents: int
    noise_max: int


FLITE_VOICES = ("kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = (
    "upc_ca_ona_hts", "ked_diphone", "czech_dita", "czech_krb", "czech_machac", "czech_ph",
    "lp_diphone", "pc_diphone", "hy_fi_mv_diphone", "suo_fi_lj_diphone",
)
ESPEAK_VARIANTS = (
    ("en-us+m3", 40, 160), ("en-gb+f2", 65, 150), ("en-gb-scotland+m1", 30, 170),
    ("en-029+f4", 70, 155), ("en-us+klatt2", 50, 165), ("en-gb-x-rp+m7", 35, 150),
    ("en-us-nyc+f5", 80, 170), ("en-gb-x-gbclan+m5", 25, 160), ("en+croak", 45, 150),
    ("en-us+f1", 60, 175), ("en-gb-x-gbcwmd+m2", 55, 165), ("en+grandma", 75, 145),
)

PRESETS = {
    "smoke": Preset(
        tts_utts=4, real_utts=4, derived_utts=3, flite=FLITE_VOICES, festival=(), espeak=3,
        real=("ast_en_allison", "ast_fr_armelle", "ast_es_co"), derived_per_real=1,
        derived_per_tts=1, max_derived_tts_parents=1, noise_max=4,
    ),
    "default": Preset(
        tts_utts=24, real_utts=32, derived_utts=16, flite=FLITE_VOICES, festival=FESTIVAL_VOICES,
        espeak=10, real=(), derived_per_real=2, derived_per_tts=1, max_derived_tts_parents=14,
        noise_max=40,
    ),
    "large": Preset(
        tts_utts=60, real_utts=90, derived_utts=40, flite=FLITE_VOICES, festival=FESTIVAL_VOICES,
        espeak=12, real=(), derived_per_real=3, derived_per_tts=2, max_derived_tts_parents=14,
        noise_max=80,
    ),
}


# --------------------------------------------------------------------------- real sources
@dataclass(frozen=True)
class RealSource:
    """A recorded speaker inside a Debian data package."""

    speaker: str
    package: str
    pattern: str  # glob under the package root
    fmt: str  # g722 | gsm | sndfile
    licence: str
    native_sr: int
    exclude: tuple[str, ...] = ("/silence/",)


_AST = "usr/share/asterisk/sounds"
_FIL = "usr/share/games/fillets-ng/sound"
REAL_SOURCES = {
    s.speaker: s
    for s in (
        RealSource("ast_en_allison", "asterisk-core-sounds-en-g722", f"{_AST}/en_US_f_Allison/**/*.g722", "g722", "CC-BY-SA-3.0", 16000),
        RealSource("ast_fr_june", "asterisk-core-sounds-fr-g722", f"{_AST}/fr_CA_f_June/**/*.g722", "g722", "CC-BY-SA-3.0", 16000),
        RealSource("ast_it_carlo", "asterisk-core-sounds-it-g722", f"{_AST}/it_IT_m_Carlo/**/*.g722", "g722", "CC-BY-SA-3.0", 16000),
        RealSource("ast_ru_ivrvoice", "asterisk-core-sounds-ru-g722", f"{_AST}/ru_RU_f_IvrvoiceRU/**/*.g722", "g722", "CC-BY-SA-3.0", 16000),
        RealSource("fillets_cs_m", "fillets-ng-data-cs", f"{_FIL}/*/cs/*-m-*.ogg", "sndfile", "GPL-2+", 22050),
        RealSource("fillets_cs_v", "fillets-ng-data-cs", f"{_FIL}/*/cs/*-v-*.ogg", "sndfile", "GPL-2+", 22050),
        RealSource("fillets_nl_m", "fillets-ng-data-nl", f"{_FIL}/*/nl/*-m-*.ogg", "sndfile", "GPL-2+", 22050),
        RealSource("fillets_nl_v", "fillets-ng-data-nl", f"{_FIL}/*/nl/*-v-*.ogg", "sndfile", "GPL-2+", 22050),
        RealSource("ast_it_menardi", "asterisk-prompt-it-menardi-wav", f"{_AST}/it_IT_f_Menardi/**/*.wav", "sndfile", "CC-BY-SA-3.0", 8000),
        RealSource("ast_fr_armelle", "asterisk-prompt-fr-armelle", f"{_AST}/fr/**/*.gsm", "gsm", "GPL-2+", 8000),
        RealSource("ast_es_co", "asterisk-prompt-es-co", f"{_AST}/es/**/*.gsm", "gsm", "GPL-2+", 8000),
    )
}
NOISE_PACKAGE = "sonic-pi-samples"
NOISE_PREFIXES = ("ambi_", "vinyl_", "loop_industrial", "loop_compus", "loop_mehackit", "misc_")

TTS_LICENCES = {
    "flite": "flite/CMU ARCTIC voices: BSD-style (free use)",
    "festival:upc_ca_ona_hts": "LGPL-2.1+ (festvox-ca-ona-hts)",
    "festival:ked_diphone": "festvox free licence (festvox-kdlpc16k)",
    "festival:czech": "GPL-2+ (festvox-czech-*)",
    "festival:italian": "festvox free licence (festvox-ita*16k)",
    "festival:finnish": "LGPL (festvox-suopuhe-*)",
    "espeak-ng": "GPL-3+ (espeak-ng)",
}


def _festival_licence(voice: str) -> str:
    if voice.startswith("czech"):
        return TTS_LICENCES["festival:czech"]
    if voice in ("lp_diphone", "pc_diphone"):
        return TTS_LICENCES["festival:italian"]
    if "fi_" in voice:
        return TTS_LICENCES["festival:finnish"]
    return TTS_LICENCES.get(f"festival:{voice}", "see Debian package copyright")


# --------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One unit of parallel work: all utterances of one speaker."""

    speaker: str
    kind: str  # tts | real | derived
    engine: str  # flite | festival | espeak | real | speed | pitch | formant
    arg: str = ""  # voice name / package root / parent speaker
    n: int = 0
    seed: int = 0
    params: dict = field(default_factory=dict)


def _trim(x: np.ndarray, sr: int = SR, thr_db: float = -40.0, margin_s: float = 0.05) -> np.ndarray:
    """Cut leading/trailing silence (frames 40 dB under the loudest one)."""
    if x.size == 0:
        return x
    hop = max(1, int(0.01 * sr))
    n = len(x) // hop
    if n < 2:
        return x
    e = (x[: n * hop].reshape(n, hop) ** 2).mean(axis=1) + 1e-12
    db = 10 * np.log10(e / e.max())
    idx = np.nonzero(db > thr_db)[0]
    if idx.size == 0:
        return x[:0]
    m = int(margin_s * sr)
    return x[max(0, idx[0] * hop - m) : min(len(x), (idx[-1] + 1) * hop + m)]


def _normalise(x: np.ndarray, rms_db: float = -24.0) -> np.ndarray:
    """Scale to a fixed RMS (dBFS) with the peak kept under 0.95."""
    x = np.asarray(x, dtype=np.float64)
    rms = np.sqrt(np.mean(x**2)) + 1e-12
    y = x * (10 ** (rms_db / 20) / rms)
    peak = np.abs(y).max() + 1e-12
    if peak > 0.95:
        y *= 0.95 / peak
    return y.astype(np.float32)


def _text_plan(job: Job) -> list[str]:
    """Texts of a TTS speaker: 1-2 sentences each, picked by a per-speaker seeded RNG."""
    pool = sentences(240)
    rng = np.random.default_rng([job.seed, _stable_int(job.speaker)])
    order = rng.permutation(len(pool))
    out, k = [], 0
    for _ in range(job.n):
        m = 1 if rng.random() < 0.35 else 2
        out.append(" ".join(pool[order[(k + j) % len(pool)]] for j in range(m)))
        k += m
    return out


def _stable_int(s: str) -> int:
    return int(config_hash(s, length=8), 16)


def _write(out_dir: Path, utt_id: str, x: np.ndarray) -> tuple[str, float]:
    rel = f"audio/{utt_id}.wav"
    path = out_dir / rel
    if not path.exists():
        save(path, x)
    return rel, len(x) / SR


def _record(job: Job, utt_id: str, rel: str, dur: float, text: str, source: str,
            licence: str, native_sr: int, parent: str = "") -> dict:
    return asdict(Utterance(
        utt_id=utt_id, path=rel, speaker=job.speaker, source=source, kind=job.kind,
        licence=licence, native_sample_rate=native_sr, duration_s=round(dur, 4), split="train",
        text=text, parent_speaker=parent,
    ))


def _existing(out_dir: Path, utt_id: str) -> float | None:
    p = out_dir / "audio" / f"{utt_id}.wav"
    if p.exists():
        import soundfile as sf

        return sf.info(str(p)).frames / SR
    return None


def _run_tts(job: Job, out_dir: Path) -> list[dict]:
    texts = _text_plan(job)
    recs = []
    todo = []
    for i, text in enumerate(texts):
        uid = f"{job.speaker}_{i:03d}"
        dur = _existing(out_dir, uid)
        if dur is None:
            todo.append((i, uid, text))
        else:
            recs.append((i, uid, text, dur))
    native = {"flite": 16000, "espeak": 22050}.get(job.engine, 16000)
    if todo:
        with tempfile.TemporaryDirectory(prefix="pse-tts-") as tmp:
            tmp = Path(tmp)
            files = [tmp / f"{uid}.wav" for _, uid, _ in todo]
            if job.engine == "festival":
                lines = [f"(voice_{job.arg})"]
                for (_, _, text), f in zip(todo, files, strict=True):
                    t = text.replace('"', "").replace("\\", "")
                    lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{t}")) "{f}" \'riff)')
                scm = tmp / "batch.scm"
                scm.write_text("\n".join(lines) + "\n")
                subprocess.run(["festival", "-b", str(scm)], check=True, capture_output=True, timeout=900)
            else:
                for (_, _, text), f in zip(todo, files, strict=True):
                    if job.engine == "flite":
                        cmd = ["flite", "-voice", job.arg, "-t", text, "-o", str(f)]
                    else:
                        voice, pitch, speed = job.params["voice"], job.params["pitch"], job.params["speed"]
                        cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(f), text]
                    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            for (i, uid, text), f in zip(todo, files, strict=True):
                if not f.exists():
                    continue
                import soundfile as sf

                native = sf.info(str(f)).samplerate
                x = _normalise(_trim(load(f)))
                if len(x) < int(0.5 * SR):
                    continue
                _, dur = _write(out_dir, uid, x)
                recs.append((i, uid, text, dur))
    source = f"{job.engine}:{job.params.get('voice', job.arg)}"
    if job.engine == "flite":
        lic = TTS_LICENCES["flite"]
    elif job.engine == "festival":
        lic = _festival_licence(job.arg)
    else:
        lic = TTS_LICENCES["espeak-ng"]
    return [
        _record(job, uid, f"audio/{uid}.wav", dur, text, source, lic, native)
        for _, uid, text, dur in sorted(recs)
    ]


# ---- real recordings
def _ffmpeg_decode(data: bytes, fmt: str) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-f", fmt, "-i", "pipe:0", "-f", "f32le", "-ac", "1", "pipe:1"]
    res = subprocess.run(cmd, input=data, capture_output=True, check=True, timeout=600)
    return np.frombuffer(res.stdout, dtype=np.float32)


def _real_files(src: RealSource, roots: list[Path]) -> list[Path]:
    for root in roots:
        files = sorted(
            p for p in root.glob(src.pattern)
            if p.is_file() and not any(e in str(p) for e in src.exclude)
        )
        if files:
            return files
    return []


def _decode_prompts(src: RealSource, files: list[Path]) -> list[np.ndarray]:
    """Decode prompt files to 16 kHz float32 (one ffmpeg call for raw codecs)."""
    if src.fmt in ("g722", "gsm"):
        blobs = [f.read_bytes() for f in files]
        if src.fmt == "gsm":
            blobs = [b[: len(b) - len(b) % 33] for b in blobs]
            per_byte = Fraction(160, 33)
        else:
            per_byte = Fraction(2, 1)
        pcm = _ffmpeg_decode(b"".join(blobs), src.fmt)
        sr = 16000 if src.fmt == "g722" else 8000
        out, pos = [], 0
        for b in blobs:
            n = int(len(b) * per_byte)
            out.append(resample(pcm[pos : pos + n], sr, SR))
            pos += n
        return out
    return [load(f) for f in files]


def _run_real(job: Job, out_dir: Path) -> list[dict]:
    src = REAL_SOURCES[job.speaker]
    roots = [Path(p) for p in job.params["roots"]]
    files = _real_files(src, roots)
    if not files:
        return []
    rng = np.random.default_rng([job.seed, _stable_int(job.speaker)])
    order = [files[i] for i in rng.permutation(len(files))]
    recs: list[dict] = []
    gap = np.zeros(int(0.12 * SR), dtype=np.float32)
    pos, batch = 0, 48
    pending: list[tuple[np.ndarray, str]] = []
    cur: list[np.ndarray] = []
    names: list[str] = []
    target = rng.uniform(3.0, 5.5)
    while len(recs) < job.n and pos < len(order):
        chunk = order[pos : pos + batch]
        pos += batch
        pending.extend(zip(_decode_prompts(src, chunk), [f.stem for f in chunk], strict=True))
        while pending and len(recs) < job.n:
            x, name = pending.pop(0)
            x = _trim(x)
            if len(x) < int(0.3 * SR):
                continue
            x = x[: int(6.0 * SR)]
            cur.append(x)
            names.append(name)
            dur = sum(len(c) for c in cur) / SR + gap.size / SR * (len(cur) - 1)
            if dur >= target:
                pieces = []
                for k, c in enumerate(cur):
                    if k:
                        pieces.append(gap)
                    pieces.append(c)
                y = _normalise(np.concatenate(pieces)[: int(6.5 * SR)])
                uid = f"{job.speaker}_{len(recs):03d}"
                rel, d = _write(out_dir, uid, y)
                recs.append(_record(job, uid, rel, d, " ".join(names), src.package, src.licence, src.native_sr))
                cur, names = [], []
                target = rng.uniform(3.0, 5.5)
    return recs


# ---- derived speakers
def _speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Resampling speed change by ``factor`` (>1: faster, higher pitch and formants)."""
    fr = Fraction(factor).limit_denominator(50)
    from scipy.signal import resample_poly

    return resample_poly(x.astype(np.float64), fr.denominator, fr.numerator).astype(np.float32)


def _sox_pitch(x: np.ndarray, cents: float) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="pse-sox-") as tmp:
        a, b = Path(tmp) / "a.wav", Path(tmp) / "b.wav"
        save(a, x)
        subprocess.run(["sox", "-D", "-R", str(a), str(b), "pitch", f"{cents:.0f}"], check=True,
                       capture_output=True, timeout=120)
        return load(b)


def perturb(x: np.ndarray, method: str, value: float) -> np.ndarray:
    """Apply a derived-speaker perturbation.

    Args:
        x: waveform ``[T]`` at 16 kHz.
        method: ``speed`` (resample by ``value``), ``pitch`` (sox pitch shift of ``value``
            cents, formants kept) or ``formant`` (speed ``value`` then pitch shifted back, so
            mainly the formants / vocal tract length change).
        value: speed factor or cents.

    Returns:
        perturbed waveform ``[T']``.
    """
    if method == "speed":
        return _speed(x, value)
    if method == "pitch":
        return _sox_pitch(x, value)
    if method == "formant":
        return _sox_pitch(_speed(x, value), -1200.0 * np.log2(value))
    raise ValueError(f"unknown perturbation {method!r}; choices: speed, pitch, formant")


def _run_derived(job: Job, out_dir: Path) -> list[dict]:
    parent_recs = job.params["parent_recs"][: job.n]
    recs = []
    for k, pr in enumerate(parent_recs):
        uid = f"{job.speaker}_{k:03d}"
        dur = _existing(out_dir, uid)
        if dur is None:
            x = load(out_dir / pr["path"])
            y = _normalise(perturb(x, job.engine, job.params["value"]))
            _, dur = _write(out_dir, uid, y)
        r = _record(job, uid, f"audio/{uid}.wav", dur, pr["text"], f"{pr['source']}+{job.engine}",
                    pr["licence"], pr["native_sample_rate"], parent=job.arg)
        r["kind"] = "derived"
        recs.append(r)
    return recs


def run_job(job: Job, out_dir: str) -> tuple[str, list[dict], str]:
    """Run one job (in a worker process). Returns ``(speaker, records, error)``."""
    out = Path(out_dir)
    part = out / "parts" / f"{job.speaker}.json"
    if part.exists():
        return job.speaker, json.loads(part.read_text()), ""
    try:
        if job.kind == "tts":
            recs = _run_tts(job, out)
        elif job.kind == "real":
            recs = _run_real(job, out)
        else:
            recs = _run_derived(job, out)
    except (subprocess.SubprocessError, OSError, RuntimeError, ValueError) as exc:
        return job.speaker, [], f"{type(exc).__name__}: {str(exc)[:200]}"
    if recs:
        atomic_write_json(part, recs)
    return job.speaker, recs, "" if recs else "no audio produced"


# --------------------------------------------------------------------------- debs
def fetch_packages(packages: list[str], cache_root: Path) -> tuple[list[Path], dict[str, str]]:
    """Download (``apt-get download``) and unpack (``dpkg-deb -x``) data packages.

    Returns:
        (roots to search, ``{package: why it is missing}``). A package already installed on
        the system (its files under ``/``) needs no download.
    """
    debs = cache_root / "debs"
    root = debs / "root"
    missing: dict[str, str] = {}
    todo = [p for p in packages if not (root / f".{p}.unpacked").exists()]
    if todo:
        debs.mkdir(parents=True, exist_ok=True)
        need = [p for p in todo if not list(debs.glob(f"{p}_*.deb"))]
        if need and shutil.which("apt-get"):
            # all at once first (fast); then one by one, so one bad name fails only itself
            for group in [need] + ([[p] for p in need] if len(need) > 1 else []):
                left = [p for p in group if not list(debs.glob(f"{p}_*.deb"))]
                if not left:
                    continue
                try:
                    subprocess.run(["apt-get", "download", *left], cwd=debs, capture_output=True,
                                   timeout=300, check=True)
                except (subprocess.SubprocessError, OSError):
                    pass
        for p in todo:
            found = sorted(debs.glob(f"{p}_*.deb"))
            if not found:
                missing[p] = "apt-get download failed" if shutil.which("apt-get") else "no apt-get"
                continue
            if not shutil.which("dpkg-deb"):
                missing[p] = "no dpkg-deb"
                continue
            try:
                root.mkdir(parents=True, exist_ok=True)
                subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True,
                               capture_output=True, timeout=300)
                (root / f".{p}.unpacked").write_text("ok\n")
            except (subprocess.SubprocessError, OSError) as exc:
                missing[p] = f"dpkg-deb failed: {exc}"
    return [root, Path("/")], missing


# --------------------------------------------------------------------------- build
def corpus_key(size: str, seed: int) -> str:
    """Cache key of an embedded corpus build."""
    return config_hash("embedded", size, seed, VERSION)


def _festival_voice_ok(voice: str) -> bool:
    return any(Path("/usr/share/festival/voices").glob(f"*/{voice}"))


def _plan(preset: Preset, seed: int, roots: list[Path], missing: dict[str, str]) -> list[Job]:
    jobs: list[Job] = []
    if preset.festival:
        if shutil.which("festival"):
            for v in preset.festival:
                if _festival_voice_ok(v):
                    jobs.append(Job(f"fest_{v.replace('_diphone', '').replace('_hts', '')}", "tts", "festival", v, preset.tts_utts, seed))
                else:
                    missing[f"festival voice {v}"] = "not installed"
        else:
            missing["festival"] = "binary not found"
    if preset.flite:
        if shutil.which("flite"):
            for v in preset.flite:
                jobs.append(Job(f"flite_{v.replace('16', '')}", "tts", "flite", v, preset.tts_utts, seed))
        else:
            missing["flite"] = "binary not found"
    if preset.espeak:
        if shutil.which("espeak-ng"):
            for voice, pitch, speed in ESPEAK_VARIANTS[: preset.espeak]:
                name = "espeak_" + voice.replace("+", "_").replace("-", "")
                jobs.append(Job(name, "tts", "espeak", voice, preset.tts_utts, seed,
                                {"voice": voice, "pitch": pitch, "speed": speed}))
        else:
            missing["espeak-ng"] = "binary not found"
    real = preset.real or tuple(REAL_SOURCES)
    if not shutil.which("ffmpeg"):
        for s in real:
            if REAL_SOURCES[s].fmt in ("g722", "gsm"):
                missing[REAL_SOURCES[s].package] = "ffmpeg not found"
    for s in real:
        src = REAL_SOURCES[s]
        if src.package in missing:
            continue
        jobs.append(Job(s, "real", "real", src.package, preset.real_utts, seed,
                        {"roots": [str(r) for r in roots]}))
    return jobs


def _derived_plan(preset: Preset, seed: int, done: dict[str, list[dict]]) -> list[Job]:
    rng = np.random.default_rng([seed, 7])
    jobs: list[Job] = []
    methods = ["speed", "formant", "pitch"] if shutil.which("sox") else ["speed"]
    real = sorted(s for s, r in done.items() if r and r[0]["kind"] == "real")
    tts = sorted(s for s, r in done.items() if r and r[0]["kind"] == "tts" and not s.startswith("espeak"))
    tts = tts[: preset.max_derived_tts_parents]
    plan = [(s, preset.derived_per_real) for s in real] + [(s, preset.derived_per_tts) for s in tts]
    m = 0
    for parent, count in plan:
        for _k in range(count):
            method = methods[m % len(methods)]
            sign = 1 if m % 2 == 0 else -1  # all (method, direction) pairs occur
            m += 1
            if method == "pitch":
                value = float(sign * rng.uniform(250, 450))
                tag = f"p{value:+.0f}"
            else:
                mag = rng.uniform(0.08, 0.16)
                value = float(1.0 + mag if sign > 0 else 1.0 / (1.0 + mag))
                tag = f"{method[0]}{value:.2f}"
            jobs.append(Job(f"{parent}__{tag}", "derived", method, parent, preset.derived_utts,
                            seed, {"value": value, "parent_recs": done[parent]}))
    return jobs


def _build_noise(preset: Preset, roots: list[Path], out_dir: Path) -> int:
    nd = out_dir / "noise"
    files: list[Path] = []
    for root in roots:
        d = root / "usr/share/sonic-pi/samples"
        if d.is_dir():
            files = sorted(p for p in d.glob("*.flac") if p.name.startswith(NOISE_PREFIXES))
            break
    n = 0
    for f in files[: preset.noise_max]:
        dst = nd / f"{f.stem}.wav"
        if not dst.exists():
            try:
                x = load(f)
            except RuntimeError:
                continue
            if len(x) < int(0.5 * SR):
                continue
            save(dst, _normalise(x, -26.0))
        n += 1
    return n


def _pool_run(jobs: list[Job], out_dir: Path, workers: int, desc: str, quiet: bool,
              results: dict[str, list[dict]], errors: dict[str, str]) -> None:
    from tqdm import tqdm

    jobs = sorted(jobs, key=lambda j: (j.engine != "festival", j.kind != "real", j.speaker))
    bar = tqdm(total=len(jobs), desc=desc, unit="spk", disable=quiet, file=sys.stderr)
    if workers <= 1 or len(jobs) <= 1:
        for j in jobs:
            spk, recs, err = run_job(j, str(out_dir))
            results[spk] = recs
            if err:
                errors[spk] = err
            bar.update(1)
    else:
        import multiprocessing as mp

        from bench.runtime import pool_start_method

        # spawn once CUDA is live in this process (a corpus built after a GPU teacher loaded)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(pool_start_method())) as ex:
            futs = [ex.submit(run_job, j, str(out_dir)) for j in jobs]
            for fut in futs:
                spk, recs, err = fut.result()
                results[spk] = recs
                if err:
                    errors[spk] = err
                bar.update(1)
    bar.close()


def build_embedded(size: str = "default", seed: int = 0, cache: Cache | None = None,
                   workers: int = 2, quiet: bool = False) -> Path:
    """Build (or reuse) the embedded corpus; return its manifest path.

    Args:
        size: preset name (``smoke``, ``default``, ``large``).
        seed: build seed (text choice, prompt order, derived-speaker parameters, split).
        cache: artifact cache (default root when None).
        workers: synthesis processes.
        quiet: no progress bar.

    Raises:
        ValueError: unknown size.
        CorpusBuildError: fewer than 6 speakers could be built.
    """
    if size not in PRESETS:
        raise ValueError(f"unknown corpus size {size!r}; choices: {', '.join(PRESETS)}")
    cache = cache or Cache()
    key = corpus_key(size, seed)
    out_dir = cache.root / STAGE / key
    manifest = out_dir / "manifest.csv"
    if cache.is_done(STAGE, key) and manifest.is_file():
        return manifest
    t0 = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    preset = PRESETS[size]
    real = preset.real or tuple(REAL_SOURCES)
    packages = sorted({REAL_SOURCES[s].package for s in real} | {NOISE_PACKAGE})
    roots, missing = fetch_packages(packages, cache.root)
    jobs = _plan(preset, seed, roots, missing)
    results: dict[str, list[dict]] = {}
    errors: dict[str, str] = {}
    _pool_run(jobs, out_dir, workers, f"corpus {size}: voices", quiet, results, errors)
    done = {s: r for s, r in results.items() if r}
    djobs = _derived_plan(preset, seed, done)
    _pool_run(djobs, out_dir, workers, f"corpus {size}: derived", quiet, results, errors)
    n_noise = 0 if NOISE_PACKAGE in missing else _build_noise(preset, roots, out_dir)
    skipped = dict(missing)
    for spk, err in errors.items():
        skipped[spk] = err
    if skipped:
        warnings.warn(
            "embedded corpus: skipped unavailable sources: "
            + "; ".join(f"{k} ({v})" for k, v in sorted(skipped.items())),
            stacklevel=2,
        )
    utts = [Utterance(**r) for recs in results.values() for r in recs]
    n_spk = len({u.speaker for u in utts})
    if n_spk < MIN_SPEAKERS:
        raise CorpusBuildError(
            f"only {n_spk} speakers could be built for the embedded corpus (need >= {MIN_SPEAKERS}); "
            f"install the packages in scripts/apt-packages.txt (flite, festival voices, espeak-ng, "
            f"ffmpeg, sox) or allow apt-get download. Skipped: {', '.join(sorted(skipped)) or 'none'}"
        )
    from bench.config import CorpusConfig

    d = CorpusConfig()
    assign_splits(utts, d.val_speakers, d.test_speakers, seed)
    write_manifest(manifest, utts)
    write_content_stamp(manifest, utts, sorted((out_dir / "noise").glob("*.wav")))
    summary = Corpus(out_dir, manifest, utts).summary()
    cache.mark_done(STAGE, key, {
        "size": size, "seed": seed, "version": VERSION, "build_s": round(time.time() - t0, 1),
        "noise_files": n_noise, "skipped": skipped, **summary,
    }, verify=False)
    return manifest


@registry.register("dataset", "embedded")
def embedded_dataset(cfg, cache: Cache) -> Corpus:
    """Dataset plugin: build (once) and load the embedded corpus for ``cfg.size``/``cfg.seed``."""
    manifest = build_embedded(cfg.size, cfg.seed, cache, workers=min(2, os.cpu_count() or 1),
                              quiet=not sys.stderr.isatty())
    corpus = Corpus(manifest.parent, manifest)
    return resplit(corpus, cfg.val_speakers, cfg.test_speakers, cfg.seed)
