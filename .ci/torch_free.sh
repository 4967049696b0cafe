#!/usr/bin/env bash
# Export a small model with the toolchain venv ($1), then run `infer` and `eval` on it from a
# venv made with `pip install -e .` alone ($2), where torch must be absent; work dir $3.
set -euo pipefail
full="$1/bin"; slim="$2"; work="$3"
mkdir -p "$work"
"$full/pbd-deploy" synth "$work/data" --videos 12 --classes 2
"$full/pbd-deploy" train --data "$work/data" --out "$work/model" --epochs 1
"$full/pbd-deploy" export "$work/model" --out "$work/deploy"

python3 -m venv "$slim"
"$slim/bin/python" -m pip install -q --upgrade pip
"$slim/bin/pip" install -q -e .
if "$slim/bin/python" -c "import torch" 2>/dev/null; then
  echo "torch-free check: torch is importable in the deploy-only venv" >&2; exit 1
fi
video=$(ls "$work/data/videos" | head -n 1)
"$slim/bin/pbd-deploy" infer "$work/deploy/model.onnx" "$work/data/videos/$video" --json "$work/dets.json"
"$slim/bin/python" -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['detections'], d" "$work/dets.json"
"$slim/bin/pbd-deploy" eval "$work/deploy/model.onnx" --data "$work/data" --split test
# A toolchain command names the extra to install, in one line, exit 2.
set +e
msg=$("$slim/bin/pbd-deploy" train --data "$work/data" --out "$work/x" 2>&1); rc=$?
set -e
echo "$msg"
[ "$rc" -eq 2 ] && [ "$(printf '%s\n' "$msg" | wc -l)" -eq 1 ] && grep -q "pbd-deploy\[full\]" <<<"$msg"
echo "torch-free deploy side: ok"
