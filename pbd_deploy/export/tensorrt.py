"""Build a TensorRT engine from an exported ONNX file, or write the trtexec command that does.

TensorRT 10 (JetPack 6 on Orin ships 10.3) takes reduced precision as builder flags.
TensorRT 11 removed the FP16/INT8/BF16 flags: every network is strongly typed, so the
precision comes from the ONNX file itself (model.fp16.onnx, or model.int8.onnx's Q/DQ
nodes). Both are supported, gated on `trt.__version__`. Only the 10/11 API is used:
`build_serialized_network`, named tensors, `set_memory_pool_limit`, explicit batch.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from pbd_deploy.errors import PbdError
from pbd_deploy.export.config import EngineConfig
from pbd_deploy.optional import require
from pbd_deploy.runtime.artifact import check_listed, load_manifest
from pbd_deploy.runtime.engine_meta import DeviceInfo, engine_metadata, metadata_path

log = logging.getLogger(__name__)


def trt_major(version: str) -> int:
    """Major version of a TensorRT version string; only 10 and 11+ are supported."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise PbdError(f"cannot read the TensorRT version {version!r}") from None
    if major < 10:
        raise PbdError(f"TensorRT {version} is too old; pbd-deploy needs TensorRT 10 or 11")
    return major


def onnx_precision(manifest: dict, onnx_name: str) -> str:
    return manifest["files"][onnx_name].get("precision", "fp32")


def check_precision(config: EngineConfig, file_precision: str, major: int) -> None:
    """On TensorRT 11 the ONNX file must already hold the asked precision."""
    if major >= 11 and config.precision != file_precision:
        variant = {"fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}.get(config.precision)
        raise PbdError(
            f"TensorRT 11 builds strongly typed networks: a {config.precision} engine needs "
            f"the {config.precision} ONNX ({variant or 'model.onnx'}), not a {file_precision} one"
        )
    if major == 10 and file_precision == "int8" and config.precision != "int8":
        raise PbdError("a Q/DQ (int8) ONNX needs --precision int8 on TensorRT 10")


def shape_of(input_shape: list, batch_time: tuple[int, int]) -> list[int]:
    """Model input dims for a (batch, time) pair: time is axis 2 of frames and features."""
    dims = [int(d) if isinstance(d, int) else 0 for d in input_shape]
    dims[0], dims[2] = batch_time
    return dims


def profiles(manifest: dict, config: EngineConfig) -> list[dict]:
    """The one optimization profile as {input: name, min/opt/max: dims}."""
    inp = manifest["input"]
    return [
        {
            "input": inp["name"],
            **{
                k: shape_of(inp["shape"], getattr(config, f"{k}_shape"))
                for k in ("min", "opt", "max")
            },
        }
    ]


def is_dynamic(manifest: dict) -> bool:
    return any(not isinstance(d, int) for d in manifest["input"]["shape"])


def trtexec_command(
    onnx_path: str, engine_path: str, manifest: dict, config: EngineConfig, major: int
) -> list[str]:
    """The trtexec arguments equivalent to `build_engine` on TensorRT `major`."""
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if is_dynamic(manifest):
        (p,) = profiles(manifest, config)
        for key in ("min", "opt", "max"):
            cmd.append(f"--{key}Shapes={p['input']}:" + "x".join(map(str, p[key])))
    cmd.append(f"--memPoolSize=workspace:{max(1, round(config.workspace_gib * 1024))}")  # MiB
    cmd.append(f"--timingCacheFile={config.timing_cache}")
    if major == 10 and config.precision == "fp16":
        cmd.append("--fp16")
    if major == 10 and config.precision == "int8":
        cmd.append("--int8")  # enables INT8 kernels for the Q/DQ nodes; no calibrator
    if config.dla_core is not None:
        cmd += [f"--useDLACore={config.dla_core}", "--allowGPUFallback"]
    return cmd


def build_script(onnx_name: str, manifest: dict, config: EngineConfig) -> str:
    """build_engine.sh: the trtexec command for the TensorRT version found on the target."""
    lines = [
        shlex.join(trtexec_command(onnx_name, "model.engine", manifest, config, m))
        for m in (10, 11)
    ]
    return "\n".join(
        [
            "#!/bin/sh",
            "# Build model.engine on the target device (Jetson engines must be built there).",
            "# The trtexec equivalent of `pbd-deploy build-engine " + onnx_name + "`, written",
            "# because TensorRT was not available at export. build-engine also writes",
            "# model.engine.json, the metadata the pbd-deploy runtime checks before loading.",
            "set -e",
            'cd "$(dirname "$0")"',
            "MAJOR=$(python3 -c 'import tensorrt; print(tensorrt.__version__.split(\".\")[0])')",
            'if [ "$MAJOR" -ge 11 ]; then',
            f"  {lines[1]}",
            "else",
            f"  {lines[0]}",
            "fi",
            "",
        ]
    )


def _parse(trt, network, logger, onnx_path: Path):
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PbdError(f"TensorRT cannot parse {onnx_path}: {errors[:500]}")
    return parser


def _builder_config(trt, builder, config: EngineConfig, major: int, manifest: dict, cache: bytes):
    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    if major == 10 and config.precision == "fp16":
        cfg.set_flag(trt.BuilderFlag.FP16)
    if major == 10 and config.precision == "int8":
        cfg.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales from Q/DQ nodes
    if is_dynamic(manifest):
        (p,) = profiles(manifest, config)
        profile = builder.create_optimization_profile()
        profile.set_shape(p["input"], p["min"], p["opt"], p["max"])
        cfg.add_optimization_profile(profile)
    if config.dla_core is not None:
        if builder.num_DLA_cores <= config.dla_core:
            raise PbdError(
                f"--dla-core {config.dla_core}: this device has {builder.num_DLA_cores} DLA cores"
            )
        cfg.default_device_type = trt.DeviceType.DLA
        cfg.DLA_core = config.dla_core
        cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing = cfg.create_timing_cache(cache)
    cfg.set_timing_cache(timing, ignore_mismatch=False)
    return cfg


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    config: EngineConfig,
    trt=None,
    device: DeviceInfo | None = None,
) -> dict:
    """Build `engine_path` (+ its .json metadata) from an exported ONNX file.

    Args:
        onnx_path: model.onnx / model.fp16.onnx / model.int8.onnx with its model.json.
        engine_path: the engine to write.
        config: precision, workspace, profile, DLA core, timing cache file.
        trt: the tensorrt module (default: imported, or PbdError naming the [trt] extra).
        device: the GPU (default: asked through cuda-python or pycuda).

    Returns:
        The engine metadata that was written.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise PbdError(f"ONNX file not found: {onnx_path}")
    manifest = load_manifest(onnx_path)
    entry = check_listed(manifest, onnx_path)
    trt = trt or require("tensorrt", "trt")
    major = trt_major(trt.__version__)
    check_precision(config, entry.get("precision", "fp32"), major)
    if device is None:
        from pbd_deploy.runtime.cuda import open_cuda

        name, cc = open_cuda().device()
        device = DeviceInfo(trt.__version__, name, tuple(cc))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    # 11.x: strongly typed (where the flag still exists; later releases make it the default)
    typed = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    if major >= 11 and typed is not None:
        flags |= 1 << int(typed)
    network = builder.create_network(flags)
    _parse(trt, network, logger, onnx_path)
    cache_file = Path(config.timing_cache)
    cache = cache_file.read_bytes() if cache_file.is_file() else b""
    cfg = _builder_config(trt, builder, config, major, manifest, cache)
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise PbdError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    cache_file.write_bytes(bytes(cfg.get_timing_cache().serialize()))
    meta = engine_metadata(
        device,
        config.precision,
        profiles(manifest, config),
        onnx=onnx_path.name,
        onnx_sha256=entry["sha256"],
        dla_core=config.dla_core,
        strongly_typed=major >= 11,
    )
    _write(engine_path, bytes(serialized), meta)
    return meta


def _write(engine_path: Path, data: bytes, meta: dict) -> None:
    # Both files under temporary names first, so a crash never leaves an engine without
    # metadata (which the runtime would refuse) or metadata for an old engine.
    tmp_engine = engine_path.with_name(f".{engine_path.name}.tmp")
    meta_path = metadata_path(engine_path)
    tmp_meta = meta_path.with_name(f".{meta_path.name}.tmp")
    tmp_engine.write_bytes(data)
    tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    tmp_engine.replace(engine_path)
    tmp_meta.replace(meta_path)


def default_engine_config(
    manifest: dict, precision: str, workspace_gib: float, dla_core
) -> EngineConfig:
    """Profile from the export: static shapes, or batch 1..2*batch and time window/2..2*window."""
    batch, window = manifest["batch"], manifest["window"]
    if is_dynamic(manifest):
        chunk = manifest.get("time_multiple", 1)
        low = max(chunk, window // 2 // chunk * chunk)
        shapes = dict(
            min_shape=(1, low), opt_shape=(batch, window), max_shape=(2 * batch, 2 * window)
        )
    else:
        shapes = dict(
            min_shape=(batch, window), opt_shape=(batch, window), max_shape=(batch, window)
        )
    return EngineConfig(
        precision=precision, workspace_gib=workspace_gib, dla_core=dla_core, **shapes
    )


def build_engine_file(
    onnx_file,
    out=None,
    precision: str | None = None,
    workspace_gib: float = 4.0,
    dla_core: int | None = None,
    timing_cache=None,
) -> dict:
    """`pbd-deploy build-engine`: build an engine for an exported ONNX file on this device.

    Args:
        onnx_file: model.onnx / model.fp16.onnx / model.int8.onnx beside its model.json.
        out: the engine file; default model.engine beside the ONNX file.
        precision: default the ONNX file's own precision.
        workspace_gib: TensorRT workspace pool limit.
        dla_core: DLA core (Jetson) or None.
        timing_cache: default timing.cache beside the ONNX file, reused by later builds.
    """
    onnx_path = Path(onnx_file)
    if not onnx_path.is_file():
        raise PbdError(f"ONNX file not found: {onnx_path} (pass a file written by export)")
    manifest = load_manifest(onnx_path)
    entry = check_listed(manifest, onnx_path)
    config = default_engine_config(
        manifest, precision or entry.get("precision", "fp32"), workspace_gib, dla_core
    )
    config.timing_cache = str(timing_cache or onnx_path.parent / "timing.cache")
    engine = Path(out) if out else onnx_path.parent / "model.engine"
    return {**build_engine(onnx_path, engine, config), "engine": str(engine)}
