"""build_engine.sh: build model.engine and its metadata on the target device.

The script runs `pbd-deploy build-engine` where pbd-deploy and TensorRT's Python module are
both installed. Otherwise it runs trtexec (on PATH, or /usr/src/tensorrt/bin where JetPack
puts it) and writes model.engine.json itself from trtexec's device report ("Selected
Device", "Compute Capability", "SMs" and "TensorRT version" lines, printed by trtexec's
samples/common/sampleDevice.cpp and trtexec.cpp) and `sha256sum` of the engine, so the
runtime accepts the engine either way. The TensorRT major is read from trtexec's banner
("[TensorRT v100300]" = major * 10000 + minor * 100 + patch, NvInferRuntimeBase.h).
"""

from __future__ import annotations

import json
import shlex

from pbd_deploy.export.config import EngineConfig
from pbd_deploy.export.tensorrt import plan_typing, profiles, trtexec_command

ENGINE = "model.engine"


def _static_metadata(onnx_name: str, manifest: dict, config: EngineConfig, major: int) -> str:
    """The metadata fields known at export, as JSON object members (no braces)."""
    precision = manifest["files"].get(onnx_name, {}).get("precision", "fp32")
    typing = plan_typing(config, precision, f"{major}.{4 if major >= 11 else 0}")
    fields = {
        "precision": config.precision,
        "profiles": profiles(manifest, config),
        "onnx": onnx_name,
        "onnx_sha256": manifest["files"].get(onnx_name, {}).get("sha256"),
        "dla_core": config.dla_core,
        "strongly_typed": typing.strongly_typed,
        "builder_flags": list(typing.flags),
        "built_by": "trtexec",
    }
    return json.dumps(fields)[1:-1]


def _branch(onnx_name: str, manifest: dict, config: EngineConfig, major: int) -> list[str]:
    cmd = trtexec_command(onnx_name, f".{ENGINE}.tmp", manifest, config, major)[1:]
    return [
        f"  set -- {shlex.join(cmd)}",
        f"  STATIC={shlex.quote(_static_metadata(onnx_name, manifest, config, major))}",
    ]


def build_script(onnx_name: str, manifest: dict, config: EngineConfig) -> str:
    """The text of build_engine.sh for `onnx_name` of the export described by `manifest`."""
    cli = ["pbd-deploy", "build-engine", onnx_name, "--precision", config.precision]
    cli += ["--workspace", str(config.workspace_gib)]
    if config.dla_core is not None:
        cli += ["--dla-core", str(config.dla_core)]
    dla = config.dla_core is not None
    data = manifest["files"].get(onnx_name, {}).get("external_data", {}).get("file")
    lines = [
        "#!/bin/sh",
        f"# Build {ENGINE} and {ENGINE}.json (the metadata the pbd-deploy runtime checks) on",
        "# the target device: engines are specific to the TensorRT version and GPU.",
        "# Uses `pbd-deploy build-engine` when it and TensorRT's Python module are installed,",
        "# else trtexec (PATH or /usr/src/tensorrt/bin) and writes the metadata itself.",
        "set -eu",
        'cd "$(dirname "$0")"',
        "",
    ]
    if data:  # a model over 2 GB: TensorRT's parser reads the tensors from this file
        lines += [
            f"if [ ! -f {shlex.quote(data)} ]; then",
            f'  echo "build_engine.sh: {data} (the weights of {onnx_name}) is missing; copy'
            ' the whole export folder" >&2',
            "  exit 2",
            "fi",
        ]
    lines += [
        "if PBD=$(command -v pbd-deploy 2>/dev/null); then",
        "  PY=$(sed -n '1s/^#! *//p' \"$PBD\")",
        '  if [ -n "$PY" ] && $PY -c "import tensorrt" >/dev/null 2>&1; then',
        f"    exec {shlex.join(cli)}",
        "  fi",
        "fi",
        "",
        "TRTEXEC=$(command -v trtexec 2>/dev/null || true)",
        'if [ -z "$TRTEXEC" ] && [ -x /usr/src/tensorrt/bin/trtexec ]; then',
        "  TRTEXEC=/usr/src/tensorrt/bin/trtexec",
        "fi",
        'if [ -z "$TRTEXEC" ]; then',
        '  echo "build_engine.sh: trtexec is neither on PATH nor in /usr/src/tensorrt/bin;'
        ' install TensorRT (JetPack) or pbd-deploy[trt]" >&2',
        "  exit 2",
        "fi",
        "TAG=$(\"$TRTEXEC\" --help 2>&1 | sed -n 's/.*\\[TensorRT v\\([0-9]*\\)\\].*/\\1/p' | head -n 1)",
        'if [ -z "$TAG" ]; then',
        '  echo "build_engine.sh: cannot read the TensorRT version from $TRTEXEC --help" >&2',
        "  exit 2",
        "fi",
        "MAJOR=$((TAG / 10000))",
        "MINOR=$((TAG / 100 % 100))",
        'if [ "$MAJOR" -lt 10 ]; then',
        '  echo "build_engine.sh: TensorRT $MAJOR.$MINOR is too old; pbd-deploy needs 10 or 11" >&2',
        "  exit 2",
        "fi",
    ]
    if dla:
        lines += [
            'if [ "$MAJOR" -eq 11 ] && [ "$MINOR" -lt 4 ]; then',
            '  echo "build_engine.sh: TensorRT $MAJOR.$MINOR has no DLA (11.0 to 11.3);'
            ' use TensorRT 10 (JetPack 6) or 11.4.1+" >&2',
            "  exit 2",
            "fi",
        ]
    lines += [
        'if [ "$MAJOR" -ge 11 ]; then',
        *_branch(onnx_name, manifest, config, 11),
        "else",
        *_branch(onnx_name, manifest, config, 10),
        "fi",
        "",
        "# The timing cache stays on this machine, named by TensorRT version (never shipped).",
        'CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pbd-deploy"',
        'mkdir -p "$CACHE_DIR"',
        "LOG=$(mktemp)",
        f"trap 'rm -f \"$LOG\" .{ENGINE}.tmp .{ENGINE}.json.tmp' EXIT",
        'if ! "$TRTEXEC" "$@" --timingCacheFile="$CACHE_DIR/trtexec-timing-v$TAG.cache" '
        '>"$LOG" 2>&1; then',
        '  tail -n 30 "$LOG" >&2',
        '  echo "build_engine.sh: trtexec failed (its log is above)" >&2',
        "  exit 1",
        "fi",
        'field() { sed -n "s/.*$1: *//p" "$LOG" | head -n 1; }',
        'VERSION=$(field "TensorRT version")',
        "NAME=$(field 'Selected Device' | sed 's/\\\\/\\\\\\\\/g; s/\"/\\\\\"/g')",
        "CC=$(field 'Compute Capability' | sed 's/\\./, /')",
        "SMS=$(field 'SMs')",
        'if [ -z "$VERSION" ] || [ -z "$NAME" ] || [ -z "$CC" ] || [ -z "$SMS" ]; then',
        '  echo "build_engine.sh: trtexec did not report the TensorRT version and device" >&2',
        "  exit 1",
        "fi",
        f"SHA=$(sha256sum .{ENGINE}.tmp | cut -d ' ' -f 1)",
        'printf \'{"trt_version": "%s", "device_name": "%s", "compute_capability": [%s], '
        '"sm_count": %s, "engine_sha256": "%s", %s}\\n\' '
        f'"$VERSION" "$NAME" "$CC" "$SMS" "$SHA" "$STATIC" > .{ENGINE}.json.tmp',
        "# old metadata first, new metadata last: never an engine paired with another's metadata",
        f"rm -f {ENGINE}.json",
        f"mv .{ENGINE}.tmp {ENGINE}",
        f"mv .{ENGINE}.json.tmp {ENGINE}.json",
        f'echo "built {ENGINE} with TensorRT $VERSION for $NAME (sm $CC, $SMS SMs) via trtexec"',
        "",
    ]
    return "\n".join(lines)
