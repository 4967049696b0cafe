"""Build a TensorRT engine from an exported ONNX file, or write the trtexec command that does.

Files that carry their precision (model.fp16.onnx, model.int8.onnx's Q/DQ nodes) are built
strongly typed on TensorRT 10 (JetPack 6 on Orin ships 10.3) as on 11, where weak typing and
the FP16/INT8 flags are gone (NVIDIA: explicit quantization with strong typing; weak typing
deprecated since 10.12). The FP16 builder flag remains only for `model.onnx --precision
fp16` on 10.x, and for DLA on 10.x, which runs FP16 only and has no strongly typed networks.
Only the 10/11 API is used: `build_serialized_network`, named tensors,
`set_memory_pool_limit`, explicit batch. The trtexec script is in export/trt_script.py.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pbd_deploy.core.atomic import write_file, write_with_checksum
from pbd_deploy.errors import PbdError
from pbd_deploy.export.config import EngineConfig
from pbd_deploy.optional import require
from pbd_deploy.runtime.artifact import check_listed, load_manifest
from pbd_deploy.runtime.engine_meta import (
    ENGINE_SHA256,
    DeviceInfo,
    engine_metadata,
    metadata_path,
)

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


@dataclass(frozen=True)
class Typing:
    """How a network is built: strongly typed (precision from the ONNX) or weakly typed
    with builder precision flags (TensorRT 10 only)."""

    strongly_typed: bool
    flags: tuple[str, ...] = ()


def _variant(precision: str) -> str:
    return {"fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}.get(precision, "model.onnx")


def check_dla(config: EngineConfig, version: str) -> None:
    """DLA runs FP16 (and, on 10.x, implicit INT8 that needs a calibrator) only: an fp32 or
    Q/DQ build with GPU fallback would silently put every layer on the GPU."""
    if config.dla_core is None:
        return
    if config.precision != "fp16":
        raise PbdError(
            f"--dla-core builds fp16 engines only (DLA runs FP16; a {config.precision} build "
            "would fall back to the GPU layer by layer); pass --precision fp16"
        )
    major, minor = (int(p) for p in (str(version).split(".") + ["0"])[:2])
    if major == 11 and minor < 4:
        raise PbdError(
            f"TensorRT {version} has no DLA (11.0 to 11.3 removed it); build DLA engines "
            "with TensorRT 10 (JetPack 6) or 11.4.1+ (JetPack 7.2.2)"
        )


def plan_typing(config: EngineConfig, file_precision: str, version: str) -> Typing:
    """Strong typing for every file that carries its precision (model.fp16.onnx,
    model.int8.onnx's Q/DQ) on 10.x as on 11.x; weak typing with the FP16 flag only for
    `model.onnx --precision fp16` on 10.x, and for DLA on 10.x (DLA has no strongly typed
    networks before 11.4.1)."""
    major = trt_major(version)
    check_dla(config, version)
    asked, have = config.precision, file_precision
    if major == 10 and config.dla_core is not None:
        return Typing(False, ("FP16",))
    if major == 10 and have == "fp32":
        if asked == "int8":
            raise PbdError(
                "an int8 engine needs the calibrated Q/DQ file model.int8.onnx (export "
                "--int8 --calib DATA); model.onnx has no INT8 scales"
            )
        return Typing(False, ("FP16",) if asked == "fp16" else ())
    if asked != have:
        if major >= 11:
            why = f"TensorRT {version} builds strongly typed networks"
        else:
            why = f"{_variant(have)} is typed {have}"
        raise PbdError(
            f"{why}: a {asked} engine needs the {asked} ONNX ({_variant(asked)}), not a {have} one"
        )
    return Typing(True)


def check_precision(config: EngineConfig, file_precision: str, major: int) -> None:
    """Refuse a precision the ONNX file cannot be built at on TensorRT `major`."""
    plan_typing(config, file_precision, f"{major}.{4 if major >= 11 else 0}")


def shape_of(input_shape: list, batch_time: tuple[int, int]) -> list[int]:
    """Model input dims for a (batch, time) pair: time is axis 2 of frames and features."""
    dims = [int(d) if isinstance(d, int) else 0 for d in input_shape]
    dims[0], dims[2] = batch_time
    return dims


def profiles(manifest: dict, config: EngineConfig) -> list[dict]:
    """The one optimization profile, per input {input: name, min/opt/max: dims}: the model
    input, then a masked model's "valid" (B,) (model.json "valid_input") over the same batches."""
    inp = manifest["input"]
    shapes = {
        k: shape_of(inp["shape"], getattr(config, f"{k}_shape")) for k in ("min", "opt", "max")
    }
    out = [{"input": inp["name"], **shapes}]
    if manifest.get("valid_input"):
        out.append({"input": manifest["valid_input"]["name"],
                    **{k: [dims[0]] for k, dims in shapes.items()}})  # fmt: skip
    return out


def is_dynamic(manifest: dict) -> bool:
    return any(not isinstance(d, int) for d in manifest["input"]["shape"])


def trtexec_command(
    onnx_path: str,
    engine_path: str,
    manifest: dict,
    config: EngineConfig,
    major: int,
    timing_cache: str | None = None,
) -> list[str]:
    """The trtexec arguments equivalent to `build_engine` on TensorRT `major`.

    `--stronglyTyped` is needed on 10.x and a documented no-op on 11.x (strong typing is the
    default there), so one command serves both for typed files.
    """
    file_precision = manifest["files"].get(Path(onnx_path).name, {}).get("precision", "fp32")
    typing = plan_typing(config, file_precision, f"{major}.{4 if major >= 11 else 0}")
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--skipInference"]
    if is_dynamic(manifest):
        inputs = profiles(manifest, config)
        for key in ("min", "opt", "max"):
            shapes = ",".join(f"{p['input']}:" + "x".join(map(str, p[key])) for p in inputs)
            cmd.append(f"--{key}Shapes={shapes}")
    cmd.append(f"--memPoolSize=workspace:{max(1, round(config.workspace_gib * 1024))}")  # MiB
    if timing_cache:
        cmd.append(f"--timingCacheFile={timing_cache}")
    if typing.strongly_typed and major == 10:
        cmd.append("--stronglyTyped")
    if "FP16" in typing.flags:
        cmd.append("--fp16")
    if config.dla_core is not None:
        cmd += [f"--useDLACore={config.dla_core}", "--allowGPUFallback"]
    return cmd


def timing_cache_path(device: DeviceInfo, root: str | Path | None = None) -> Path:
    """The timing cache of this TensorRT version and GPU, in the user's cache folder.

    A cache is only valid for the TensorRT version and device that wrote it, so it is named
    by both and never shipped with an export.
    """
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "pbd-deploy"
    cc = "".join(map(str, device.compute_capability))
    return Path(root) / f"timing-trt{device.trt_version}-sm{cc}.cache"


def local_device(trt) -> DeviceInfo:
    """The GPU this process builds for (through cuda-python or pycuda)."""
    from pbd_deploy.runtime.cuda import open_cuda

    cuda = open_cuda()
    name, cc = cuda.device()
    return DeviceInfo(trt.__version__, name, tuple(cc), cuda.sm_count())


def _parse(trt, network, logger, onnx_path: Path):
    parser = trt.OnnxParser(network, logger)
    # parse_from_file reads external data (model.onnx.data) relative to the file's folder.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PbdError(f"TensorRT cannot parse {onnx_path}: {errors[:500]}")
    return parser


def _timing_cache(trt, cfg, data: bytes, path: Path) -> bool:
    """Attach the cache read from `path`; a refused one (another TensorRT version or device)
    is replaced by an empty cache. Returns whether the old cache was used."""
    cache = cfg.create_timing_cache(data) if data else None
    if cache is not None and cfg.set_timing_cache(cache, ignore_mismatch=False):
        return True
    if data:
        log.warning("timing cache %s was refused by TensorRT; starting an empty one", path)
    if not cfg.set_timing_cache(cfg.create_timing_cache(b""), ignore_mismatch=False):
        raise PbdError("TensorRT refused an empty timing cache; report this with its log")
    return False


def _builder_config(trt, builder, config: EngineConfig, typing: Typing, manifest: dict):
    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    for flag in typing.flags:
        cfg.set_flag(getattr(trt.BuilderFlag, flag))
    if is_dynamic(manifest):
        profile = builder.create_optimization_profile()
        for p in profiles(manifest, config):  # every input of the one profile
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
        # per-layer detail in the engine, so the inspector can tell DLA layers from GPU ones
        cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    return cfg


def dla_layers(trt, logger, serialized: bytes) -> dict:
    """How many of the engine's layers run on the DLA, from TensorRT's engine inspector.

    A DLA subgraph is one engine layer of LayerType "DLA" (its name lists the fused ONNX
    nodes); everything else runs on the GPU.
    """
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        raise PbdError("TensorRT cannot load the engine it just built (see its log)")
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]
    on_dla = [layer for layer in layers if "DLA" in str(layer.get("LayerType", "")).upper()]
    return {"dla_layers": len(on_dla), "gpu_layers": len(layers) - len(on_dla)}


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
        config: precision, workspace, profile, DLA core, timing cache file (None: the
            user cache named by TensorRT version and compute capability).
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
    typing = plan_typing(config, entry.get("precision", "fp32"), trt.__version__)
    device = device or local_device(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if typing.strongly_typed:  # 10.x: 1 << 1; 11.x: 1 << 0 (deprecated there, always on)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    _parse(trt, network, logger, onnx_path)
    cache_file = Path(config.timing_cache) if config.timing_cache else timing_cache_path(device)
    cfg = _builder_config(trt, builder, config, typing, manifest)
    cached = cache_file.read_bytes() if cache_file.is_file() else b""
    reused = _timing_cache(trt, cfg, cached, cache_file)
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise PbdError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    data = bytes(serialized)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    write_file(cache_file, bytes(cfg.get_timing_cache().serialize()))
    placement = {}
    if config.dla_core is not None:
        placement = dla_layers(trt, logger, data)
        if not placement["dla_layers"]:
            log.warning("no layer runs on DLA core %d: the engine runs on the GPU", config.dla_core)
    meta = engine_metadata(
        device,
        config.precision,
        profiles(manifest, config),
        onnx=onnx_path.name,
        onnx_sha256=entry["sha256"],
        dla_core=config.dla_core,
        strongly_typed=typing.strongly_typed,
        builder_flags=list(typing.flags),
        timing_cache={"file": str(cache_file), "reused": reused},
        **placement,
    )
    # The metadata carries the engine's sha256 and goes last: a crash never pairs them wrongly.
    return write_with_checksum(engine_path, data, metadata_path(engine_path), meta, ENGINE_SHA256)


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
        timing_cache: default the user cache of this TensorRT version and GPU
            (`timing_cache_path`), reused by later builds on this machine.
    """
    onnx_path = Path(onnx_file)
    if not onnx_path.is_file():
        raise PbdError(f"ONNX file not found: {onnx_path} (pass a file written by export)")
    manifest = load_manifest(onnx_path)
    entry = check_listed(manifest, onnx_path)
    config = default_engine_config(
        manifest, precision or entry.get("precision", "fp32"), workspace_gib, dla_core
    )
    config.timing_cache = str(timing_cache) if timing_cache else None
    engine = Path(out) if out else onnx_path.parent / "model.engine"
    return {**build_engine(onnx_path, engine, config), "engine": str(engine)}
