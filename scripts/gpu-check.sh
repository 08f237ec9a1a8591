#!/usr/bin/env bash
# GPU check: run the smoke grid (ablations/smoke.yaml) on CUDA and on the CPU, each with its own
# cache and output folder, then compare the two leaderboards' metric columns within a stated
# tolerance (python -m bench.compare): SI-SDR columns within TOL_DB dB (default 0.5), PESQ, STOI,
# cosines and EER within TOL (default 0.05), parameter and MAC counts equal. The same config
# trained on another device gives other low bits, which a few dozen training steps amplify: the
# tolerance bounds that drift, while a broken CUDA path (wrong device, dtype, data order) lands
# far outside it.
#
#   scripts/gpu-check.sh                       # after scripts/setup.sh on a machine with a GPU
#   EXTRA="--set train.amp=true" TOL_DB=1 scripts/gpu-check.sh   # the same with bf16 autocast
#
# Environment: OUT (default results/gpu-check), PY (default .venv/bin/python), TOL_DB, TOL, EXTRA
# (more bench.run arguments for both runs), PSE_KD_WORKERS (default 2: stages train in parallel
# worker processes and PESQ/STOI run in a worker pool, so those paths run on CUDA too), DEV_A and
# DEV_B (default cuda and cpu; DEV_A=cpu exercises the script itself on a machine without a GPU).
# Exit status: 0 within tolerance, 1 over it, 2 a run or the comparison failed, 3 no GPU here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/gpu-check}
TOL_DB=${TOL_DB:-0.5}
TOL=${TOL:-0.05}
EXTRA=${EXTRA:-}
DEV_A=${DEV_A:-cuda}
DEV_B=${DEV_B:-cpu}
DIR_A=$DEV_A
DIR_B=$DEV_B
[ "$DIR_A" != "$DIR_B" ] || DIR_B=$DEV_B-2
export PSE_KD_WORKERS=${PSE_KD_WORKERS:-2}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}

gpu=none
if [ "$DEV_A $DEV_B" != "cpu cpu" ] && ! gpu=$("$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print(torch.cuda.get_device_name(0) if ok else f'torch {torch.__version__} (CUDA build: {torch.version.cuda or \"none\"}) sees no CUDA device'); sys.exit(0 if ok else 1)" 2>&1); then
  echo "gpu-check: no GPU here: $gpu." >&2
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu-check: nvidia-smi is present: run scripts/setup.sh to install the CUDA build of torch 2.13.0." >&2
  else
    echo "gpu-check: nvidia-smi not found. Nothing was run or compared; run this on a machine with an NVIDIA GPU." >&2
  fi
  exit 3
fi

mkdir -p "$OUT"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "gpu: $gpu"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  nvidia-smi -L 2>/dev/null || true
  echo "PSE_KD_WORKERS=$PSE_KD_WORKERS EXTRA=$EXTRA TOL_DB=$TOL_DB TOL=$TOL"
} | tee "$OUT/env.txt"

run() {  # run DEVICE DIR: the smoke grid on DEVICE, with its own cache, into $OUT/DIR
  local dev=$1 dir=$2 t0 rc=0
  t0=$(date +%s)
  echo "gpu-check: smoke grid on $dev -> $OUT/$dir (cache $OUT/cache-$dir)"
  # shellcheck disable=SC2086  # EXTRA is a list of arguments
  "$PY" -m bench.run --grid ablations/smoke.yaml --device "$dev" --out "$OUT/$dir" \
    --cache-dir "$OUT/cache-$dir" --no-progress --no-figures $EXTRA > "$OUT/$dir.log" 2>&1 || rc=$?
  echo "gpu-check: $dev run: exit $rc, $(( $(date +%s) - t0 )) s (log: $OUT/$dir.log)"
  if [ "$rc" != 0 ]; then tail -n 30 "$OUT/$dir.log" >&2; exit 2; fi
}
run "$DEV_A" "$DIR_A"
run "$DEV_B" "$DIR_B"

rc=0
"$PY" -m bench.compare "$OUT/$DIR_A/leaderboard.csv" "$OUT/$DIR_B/leaderboard.csv" --tol-db "$TOL_DB" --tol "$TOL" \
  | tee "$OUT/compare.txt" || rc=${PIPESTATUS[0]}
case $rc in
  0) echo "gpu-check: PASS: the $DEV_A and $DEV_B leaderboards agree within tolerance ($OUT/compare.txt)" ;;
  1) echo "gpu-check: FAIL: some metric columns differ by more than the tolerance ($OUT/compare.txt)" >&2 ;;
  *) echo "gpu-check: the leaderboards could not be compared" >&2 ;;
esac
exit "$rc"
