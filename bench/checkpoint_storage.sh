#!/bin/bash
# Disk cost of checkpoint artifacts in an offline W&B run, per --log-checkpoints mode: what W&B stages under its
# data dir (kept until `wandb sync`) and what the run keeps under OUTPUT_DIR/RUN_ID/artifacts/.
#   bench/checkpoint_storage.sh [PYTHON] [WORKDIR]      (README "Checkpoints in W&B" quotes its output)
# Run from the repository root. digits, `net`, 3 epochs with --checkpoint-every 1: 33 checkpoints of ~288 KB.
set -e
PY=${1:-.venv/bin/python}; PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY"); WORK=${2:-$(mktemp -d)}; ROOT=$(cd "$(dirname "$0")/.." && pwd)
ARGS="--dataset digits --epochs 3 --model net --checkpoint-every 1 --no-progress-bar --onnx false --test-report false"
for mode in best-and-last all none; do
  d=$WORK/$mode; rm -rf "$d"; mkdir -p "$d"
  (cd "$d" && env -u WANDB_API_KEY WANDB_MODE=offline WANDB_DIR="$d" WANDB_DATA_DIR="$d/data" WANDB_SILENT=true \
     OMP_NUM_THREADS=1 "$PY" "$ROOT/scripts/train.py" $ARGS --output-dir "$d/runs" --log-checkpoints $mode > "$d/log" 2>&1)
  staged=$(du -sb "$d/data/artifacts/staging" 2>/dev/null | cut -f1)
  kept=$(du -sb "$d"/runs/*/artifacts 2>/dev/null | cut -f1); links=$(ls "$d"/runs/*/artifacts 2>/dev/null | wc -l)
  echo "$mode: W&B staging ${staged:-0} bytes; OUTPUT_DIR/RUN_ID/artifacts ${kept:-0} bytes in $links hard links;" \
       "checkpoints/ $(du -sb "$d"/runs/*/checkpoints | cut -f1) bytes"
done
