#!/usr/bin/env bash
# One-command set-up: virtual environment, Python packages (torch pinned to the CPU wheel),
# the torchaudio fix-up, and the Debian packages the embedded corpus is built from.
# Idempotent: a second call with unchanged dependency files does almost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

# --- Debian packages (TTS voices, decoders). Root installs them; others get the exact line.
APT_PKGS=$(grep -v '^\s*#' scripts/apt-packages.txt | tr '\n' ' ')
missing=""
for p in $APT_PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || echo "setup: apt-get update failed; trying with the lists there are"
    apt-get install -y -qq --no-install-recommends $missing >/dev/null \
      || echo "setup: WARNING: some Debian packages could not be installed; the corpus build skips missing sources"
  else
    echo "setup: not root: run this to get every corpus source, then re-run:"
    echo "  sudo apt-get install -y$missing"
    echo "setup: carrying on with what is installed (missing sources are skipped)"
  fi
fi

# --- Python environment.
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.pse-kd-bench-$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch==2.13.0 is pinned in pyproject AND applied as a constraint so no dependency moves it.
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e .
  # resemblyzer (GE2E weights inside the wheel) declares webrtcvad, which imports the removed
  # pkg_resources; webrtcvad-wheels (a dependency above) provides the same module.
  "$VENV/bin/python" -m pip install -q -c constraints.txt --no-deps "resemblyzer==0.1.4"
  "$VENV/bin/python" scripts/fix_torchaudio.py
  "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('setup: torch', torch.__version__)"
  rm -f "$VENV"/.pse-kd-bench-*
  touch "$stamp"
fi
echo "setup: ready ($VENV)"
