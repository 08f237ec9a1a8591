#!/usr/bin/env bash
# One-command set-up: virtual environment, Python packages (torch pinned to 2.13.0: the CUDA build
# when a GPU is present, i.e. `nvidia-smi` works, else the CPU wheel), the torchaudio fix-up, and
# the Debian packages the embedded corpus is built from.
# Idempotent: a second call with unchanged dependency files (and the same GPU or none) does almost nothing.
# Environment: PSE_KD_TORCH_CUDA=cu128 picks the CUDA build (default: the newest of
# $TORCH_CUDA_BUILDS the driver supports), PSE_KD_TORCH_INDEX=URL another wheel index,
# PSE_KD_TORCH_CPU=1 keeps the CPU wheel on a GPU machine.
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

# --- Which torch build: CUDA when a GPU answers nvidia-smi, else the CPU wheel (as before).
TORCH_VERSION=2.13.0
TORCH_CUDA_BUILDS=${TORCH_CUDA_BUILDS:-"cu130 cu129 cu128 cu126"}  # newest first
torch_cuda_build() {  # the newest build in TORCH_CUDA_BUILDS that the driver's CUDA version runs
  local drv want w
  # "CUDA Version: 12.8" -> 1208; cu128 -> 1208, cu130 -> 1300
  drv=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1)
  [ -n "$drv" ] && drv=$(( ${drv% *} * 100 + ${drv#* } ))
  for want in $TORCH_CUDA_BUILDS; do
    w=${want#cu}
    if [ -z "$drv" ] || [ $(( ${w:0:2} * 100 + ${w:2} )) -le "$drv" ]; then echo "$want"; return; fi
  done
  echo "${TORCH_CUDA_BUILDS##* }"
}
FLAVOUR=cpu
if [ -z "${PSE_KD_TORCH_CPU:-}" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  FLAVOUR=${PSE_KD_TORCH_CUDA:-$(torch_cuda_build)}
  echo "setup: GPU found ($(nvidia-smi -L | head -1)); torch $TORCH_VERSION build $FLAVOUR"
fi

# --- Python environment.
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.pse-kd-bench-$( (cat pyproject.toml constraints.txt scripts/setup.sh; echo "$FLAVOUR") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if [ "$FLAVOUR" != cpu ]; then
    # The CUDA build of the pinned version first, from PyTorch's index (its nvidia-* libraries come
    # along); the install below then finds torch==2.13.0 satisfied. A CPU build already in the
    # venv (2.13.0+cpu also satisfies ==2.13.0) is replaced.
    if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
      "$VENV/bin/python" -m pip uninstall -q -y torch 2>/dev/null || true
    fi
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" \
      --index-url "${PSE_KD_TORCH_INDEX:-https://download.pytorch.org/whl/$FLAVOUR}" \
      --extra-index-url https://pypi.org/simple
  fi
  # torch==2.13.0 is pinned in pyproject AND applied as a constraint so no dependency moves it.
  # .[scale]: the PostgreSQL driver (psycopg) for bench.run/bench.sweep --storage postgresql+psycopg://...
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[scale]"
  # resemblyzer (GE2E weights inside the wheel) declares webrtcvad, which imports the removed
  # pkg_resources; webrtcvad-wheels (a dependency above) provides the same module.
  "$VENV/bin/python" -m pip install -q -c constraints.txt --no-deps "resemblyzer==0.1.4"
  "$VENV/bin/python" scripts/fix_torchaudio.py
  "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('setup: torch', torch.__version__)"
  if [ "$FLAVOUR" != cpu ]; then
    "$VENV/bin/python" -c "import torch; assert torch.version.cuda and torch.cuda.is_available(), 'setup: the CUDA build of torch sees no GPU (driver too old for $FLAVOUR? set PSE_KD_TORCH_CUDA)'; print('setup: CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
  fi
  rm -f "$VENV"/.pse-kd-bench-*
  touch "$stamp"
fi
echo "setup: ready ($VENV)"
