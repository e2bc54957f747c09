#!/usr/bin/env bash
# What a GPU owner runs first: the tiny preset end to end on CUDA, then a few training steps of
# every model at the paper preset's shapes (steps/s, peak memory, MFU). Output under OUT.
#   scripts/gpu_smoke.sh [OUT] [PEAK_TFLOPS]    e.g. scripts/gpu_smoke.sh runs/gpu_smoke 989
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_smoke}
PEAK=${2:-}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this check needs a GPU')"
SYNTH2_PROGRESS=0 "$PY" -m synth2.cli reproduce --preset tiny --out "$OUT/tiny" --set device=cuda
"$PY" scripts/gpu_smoke.py --device cuda --batch "${BATCH:-8}" --steps 5 ${PEAK:+--peak-tflops "$PEAK"} | tee "$OUT/paper_steps.json"
