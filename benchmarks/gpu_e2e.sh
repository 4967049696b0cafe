#!/bin/sh
# The whole user path at real size on a CUDA GPU, one step after another, each timed:
# synth (real-resolution videos at 7.5 fps) -> train videomae-s (bf16, checkpointing, loader
# workers) -> eval -> compress (drop blocks 3, 7, 11; LoRA recovery) -> eval -> export
# (ONNX, parity) -> eval model.onnx. A smoke run of the path, not an accuracy figure: the
# data are a few synthetic videos and training is one short epoch.
#
# Usage: sh benchmarks/gpu_e2e.sh [WORK]        (python on PATH, or PYTHON=...)
# Env: MODEL (videomae-s), DEVICE (cuda), VIDEOS (12), SIZE (176), MIN/MAX seconds (110/150),
#      PRECISION (bf16), WORKERS (8). Each step has a time limit; the sum is 650 s.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${1:-/tmp/pbd-gpu-e2e}
MODEL=${MODEL:-videomae-s}
DEVICE=${DEVICE:-cuda}
VIDEOS=${VIDEOS:-12}
SIZE=${SIZE:-176}
MIN=${MIN:-110}
MAX=${MAX:-150}
PRECISION=${PRECISION:-bf16}
WORKERS=${WORKERS:-8}
DROP=${DROP:-3,7,11}
FAILED=0

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, say how it ended
  name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  start=$(date +%s)
  status=0
  timeout "$limit" "$@" || status=$?
  echo "== $name: exit $status after $(($(date +%s) - start)) s (limit $limit s)"
  [ "$status" -eq 0 ] || FAILED=1
  return "$status"
}

rm -rf "$WORK" && mkdir -p "$WORK"
run="$PY -m pbd_deploy"
step synth 60 $run synth "$WORK/data" --videos "$VIDEOS" --classes 4 --size "$SIZE" \
  --fps 7.5 --min-duration "$MIN" --max-duration "$MAX" || exit 1
step train 120 $run train --data "$WORK/data" --model "$MODEL" --out "$WORK/base" --epochs 1 \
  --batch-size 2 --windows-per-video 2 --device "$DEVICE" --precision "$PRECISION" \
  --checkpointing --workers "$WORKERS" || exit 1
step eval-base 40 $run eval "$WORK/base" --data "$WORK/data" --device "$DEVICE" \
  --workers "$WORKERS"
step compress 150 $run compress "$WORK/base" --data "$WORK/data" --out "$WORK/small" \
  --drop-indices "$DROP" --epochs 1 --batch-size 2 --windows-per-video 2 --device "$DEVICE" \
  --precision "$PRECISION" --checkpointing --workers "$WORKERS" || exit 1
step eval-small 40 $run eval "$WORK/small" --data "$WORK/data" --device "$DEVICE" \
  --workers "$WORKERS"
step export 180 $run export "$WORK/small" --out "$WORK/deploy" --data "$WORK/data" || exit 1
step eval-onnx 60 $run eval "$WORK/deploy/model.onnx" --data "$WORK/data"
ls -la "$WORK/deploy"
exit "$FAILED"
