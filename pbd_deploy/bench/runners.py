"""Backends: one inference call per (source, backend), on a prepared input.

torch runs model directories; onnxruntime runs .onnx files and model directories (exported
on demand); TensorRT runs .engine files. The onnxruntime and TensorRT rows go through the
runtime's own backends (`OrtBackend`, `TrtBackend`) with the session options, providers and
CUDA graphs `Detector` uses, and time what `Detector.predict` runs: a host array in, host
arrays out (copies to and from the GPU included). Heavy libraries are imported lazily.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pbd_deploy.bench.config import BenchConfig
from pbd_deploy.bench.sources import Source, resolve_shape
from pbd_deploy.errors import PbdError
from pbd_deploy.optional import require
from pbd_deploy.runtime.ort_backend import OrtBackend, pick_providers
from pbd_deploy.runtime.trt_backend import TrtBackend

HOST_TO_HOST = "host input -> host outputs, as Detector.predict runs (GPU copies included)"


@dataclass
class Runner:
    """A ready-to-call inference: `call()` runs one batch on an input prepared beforehand."""

    source: Source
    backend: str
    device: str
    call: Callable[[], object]
    timer: str = "perf_counter"  # or "cuda_events" (recorded on `stream`)
    stream: object | None = None
    info: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.source.label


def make_runner(source: Source, backend: str, config: BenchConfig, workdir: Path) -> Runner:
    """The runner for `source` on `backend`; PbdError if that pairing cannot run."""
    if backend == "torch":
        return _torch_runner(source, config)
    if backend == "ort":
        return _ort_runner(source, config, workdir)
    return _trt_runner(source, config)


def _frames(shape, seed: int = 0) -> np.ndarray:
    """A random float32 model input (latency does not depend on the values)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _torch_runner(source: Source, config: BenchConfig) -> Runner:
    import torch

    if source.kind != "dir":
        raise PbdError(f"the torch backend runs model directories, not {source.path}")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise PbdError("--device cuda needs a CUDA GPU and a CUDA build of torch; none found")
    model = source.model.to(config.device).eval()
    x = torch.from_numpy(_frames(source.shape)).to(config.device)

    def call():
        with torch.inference_mode():
            return model.predict(x)

    cuda = config.device == "cuda"
    return Runner(source, "torch", config.device, call, "cuda_events" if cuda else "perf_counter")


def ort_providers(device: str) -> list[str]:
    """The providers `Detector` would pick, limited to `device`; PbdError naming the extra."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    providers = pick_providers(require("onnxruntime", "gpu").get_available_providers())
    if providers == ["CPUExecutionProvider"]:
        raise PbdError(
            "onnxruntime here has no CUDA provider; install it with: pip install 'pbd-deploy[gpu]'"
        )
    return providers


def cpu_threads(config: BenchConfig) -> int:
    """--threads, else torch's thread count (what the torch rows use), else ORT's default (0)."""
    if config.threads:
        return config.threads
    try:
        import torch
    except ImportError:
        return 0
    return torch.get_num_threads()


def _ort_runner(source: Source, config: BenchConfig, workdir: Path) -> Runner:
    if source.kind == "engine":
        raise PbdError(f"{source.path} is a TensorRT engine; run it with --backend trt")
    providers = ort_providers(config.device)
    if source.kind == "dir" and source.onnx_path is None:
        source.onnx_path = export_for_bench(source, config, workdir)
    path = source.onnx_path or source.path
    threads = cpu_threads(config)
    backend = OrtBackend(path, providers, threads)
    shape = _own_shape(source, backend.input_shape, config, path)
    x = _frames(shape)
    info = {"providers": backend.providers, "threads": threads, "scope": HOST_TO_HOST}
    return Runner(source, "ort", config.device, run_call(backend, x, shape), info=info)


def run_call(backend, x: np.ndarray, shape) -> Callable:
    """One timed call of `backend` on `x`; a masked model (OpenTAD's padding mask) gets full
    windows ("valid" at or past the head length leaves every point unmasked)."""
    if getattr(backend, "valid_name", None) is None:
        return lambda: backend.run(x)
    valid = np.full(shape[0], np.iinfo(np.int32).max, dtype=np.int64)
    return lambda: backend.run(x, valid)


def _own_shape(source: Source, declared: list, config: BenchConfig, path: Path) -> tuple:
    """The file's input shape (dynamic dims from the config); it must match the source's."""
    shape = resolve_shape(declared, config, source.path)
    if source.shape is None:
        source.shape = shape
    elif tuple(shape) != tuple(source.shape):
        raise PbdError(f"{path} expects input {shape}, the model directory {source.shape}")
    return shape


def export_for_bench(source: Source, config: BenchConfig, workdir: Path) -> Path:
    """Export a model directory to ONNX at the benchmarked shape (static, like a deployment)."""
    from pbd_deploy.export.onnx import export_onnx

    path = Path(tempfile.mkdtemp(dir=workdir)) / "model.onnx"
    model = source.model.to("cpu").eval()
    return Path(export_onnx(model, path, window=source.shape[2], batch=config.batch))


def _trt_runner(source: Source, config: BenchConfig) -> Runner:
    if source.kind != "engine":
        raise PbdError(
            f"the trt backend runs .engine files; build one from {source.path} with "
            "`pbd-deploy export --trt` or `pbd-deploy build-engine` on the target device"
        )
    backend = TrtBackend(source.path)
    shape = _own_shape(source, _engine_shape(backend, config), config, source.path)
    x = _frames(shape)
    info = {"providers": backend.providers, "scope": HOST_TO_HOST}
    return Runner(source, "trt", "cuda", run_call(backend, x, shape), info=info)


def _engine_shape(backend, config: BenchConfig) -> list:
    """The engine's input dims; dynamic ones take --batch / --window, else the profile's optimum."""
    declared = list(backend.input_shape)  # -1: dynamic
    dynamic = [d < 0 for d in declared]
    if not any(dynamic):
        return declared
    profile = backend.metadata.get("profiles") or [{}]
    opt = profile[0].get("opt") or [-1] * len(declared)
    shape = [o if d else s for s, d, o in zip(declared, dynamic, opt)]
    if dynamic[0]:
        shape[0] = config.batch
    if len(shape) > 2 and dynamic[2] and config.window:
        shape[2] = config.window
    return shape
