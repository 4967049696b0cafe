#!/bin/sh
# One command for a machine with a CUDA GPU: the gpu/trt-marked tests, then the GEMM sweep
# and depth-vs-width (float16, 768-frame windows) on the GPU, and the block GEMMs on
# TensorRT and ONNX Runtime's CUDA provider where installed. Results go to
# benchmarks/results/gpu/<GPU name>/, never over the committed CPU results.
# Budget: each step has a timeout; the whole suite stays under 8 minutes on one datacenter
# GPU (time limits: tests 180 s, GEMM sweeps 90 + 90 + 30 s, depth vs width 60 s).
#
# Usage: sh benchmarks/gpu_suite.sh [--dry-run]     (run from anywhere; python on PATH)
set -eu
cd "$(dirname "$0")/.."
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "gpu_suite.sh: unknown option $1 (use --dry-run or nothing)" >&2; exit 2 ;;
esac
PY=${PYTHON:-python}

if [ "$DRY" -eq 1 ]; then
  GPU="<GPU name from nvidia-smi>"
else
  if ! GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) \
      || [ -z "$GPU" ]; then
    echo "gpu_suite.sh: no CUDA GPU found (nvidia-smi); run it on a GPU machine" >&2
    exit 2
  fi
fi
SLUG=$(printf '%s' "$GPU" | tr -c 'A-Za-z0-9' '-')
OUT="benchmarks/results/gpu/$SLUG"
SNAP=$(mktemp -d)
trap 'rm -rf "$SNAP"' EXIT

step() {  # step SECONDS RESULT_NAME COMMAND...: run it, keep its result under $OUT
  limit=$1 name=$2
  shift 2
  echo "== [$limit s] $*"
  [ "$DRY" -eq 1 ] && return 0
  for ext in json md; do
    [ -f "benchmarks/results/$name.$ext" ] && cp "benchmarks/results/$name.$ext" "$SNAP/"
  done
  status=0
  timeout "$limit" "$@" || status=$?
  mkdir -p "$OUT"
  for ext in json md; do
    if [ -n "$name" ] && [ -f "benchmarks/results/$name.$ext" ]; then
      mv "benchmarks/results/$name.$ext" "$OUT/$name.$ext"
      # the committed CPU result stays where it was
      [ -f "$SNAP/$name.$ext" ] && mv "$SNAP/$name.$ext" "benchmarks/results/$name.$ext"
    fi
  done
  [ "$status" -eq 0 ] || echo "gpu_suite.sh: step failed (exit $status): $*" >&2
  return 0
}

has() { [ "$DRY" -eq 1 ] || "$PY" -c "$1" >/dev/null 2>&1; }
CUDA_EP="import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"

echo "GPU: $GPU -> $OUT"
step 180 "" "$PY" -m pytest -q -rs --durations=15 -p no:cacheprovider -m "gpu or trt" tests
# gemm_sweep.py names its GPU result gemm_sweep_cuda.{json,md}
step 90 gemm_sweep_cuda "$PY" benchmarks/gemm_sweep.py --device cuda --tokens 1600 6400 --iters 20
step 60 depth_vs_width "$PY" benchmarks/depth_vs_width.py --device cuda --dtype float16
# The same block GEMMs as one-MatMul ONNX graphs on the engines a deployment runs
[ "$DRY" -eq 1 ] || mkdir -p "$OUT"
if has "import tensorrt"; then
  step 90 "" "$PY" -m pbd_deploy bench gemm --model videomae-s --backend trt --device cuda \
    --tokens 3200 --iters 20 --json "$OUT/gemm_tensorrt.json"
else
  echo "== skipped: TensorRT is not installed here (bench gemm --backend trt)"
fi
if has "$CUDA_EP"; then
  step 30 "" "$PY" -m pbd_deploy bench gemm --model videomae-s --backend ort-cuda --device cuda \
    --tokens 3200 --iters 20 --json "$OUT/gemm_ort_cuda.json"
else
  echo "== skipped: onnxruntime-gpu with the CUDA provider is not installed (--backend ort-cuda)"
fi
echo "done: results in $OUT"
