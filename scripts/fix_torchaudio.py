"""Make torchaudio importable beside the CPU torch pin.

The only torchaudio that installs next to CPU torch 2.13.0 is a CUDA build whose compiled
libraries fail to load. torchaudio falls back to pure Python (fbank, resample, lfilter work)
when those libraries are absent, and speechbrain only needs that. This script tries the
import and, only if the compiled libraries fail to load, removes them from the environment.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

CHECK = "import torchaudio, torch; import torchaudio.compliance.kaldi as k; k.fbank(torch.zeros(1, 16000))"


def importable() -> tuple[bool, str]:
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip().splitlines()[-1:] and r.stderr.strip().splitlines()[-1] or ""


def main() -> int:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None:
        print("fix_torchaudio: torchaudio is not installed; nothing to do")
        return 0
    ok, err = importable()
    if ok:
        print("fix_torchaudio: torchaudio imports fine")
        return 0
    lib = Path(spec.origin).parent / "lib"
    removed = [p for p in lib.glob("*.so")]
    for p in removed:
        p.unlink()
    ok, err2 = importable()
    print(f"fix_torchaudio: removed {len(removed)} compiled libraries ({err}); import now {'ok' if ok else 'FAILS: ' + err2}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
