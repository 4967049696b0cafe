"""Backends: one inference call per (source, backend), on a prepared input.

torch runs model directories; onnxruntime runs .onnx files and model directories (exported
on demand); TensorRT runs .engine files. Heavy optional libraries are imported lazily.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pbd_deploy.bench.config import BenchConfig
from pbd_deploy.bench.sources import Source, resolve_shape
from pbd_deploy.errors import PbdError
from pbd_deploy.optional import require


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


def _frames(shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _torch_runner(source: Source, config: BenchConfig) -> Runner:
    if source.kind != "dir":
        raise PbdError(f"the torch backend runs model directories, not {source.path}")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise PbdError("--device cuda needs a CUDA GPU and a CUDA build of torch; none found")
    model = source.model.to(config.device).eval()
    x = _frames(source.shape).to(config.device)

    def call():
        with torch.inference_mode():
            return model.predict(x)

    cuda = config.device == "cuda"
    return Runner(source, "torch", config.device, call, "cuda_events" if cuda else "perf_counter")


def _onnxruntime(device: str):
    if device == "cuda":
        return require("onnxruntime", "gpu")
    try:
        import onnxruntime
    except ImportError:
        raise PbdError("onnxruntime is missing; reinstall pbd-deploy (pip install -e .)") from None
    return onnxruntime


def ort_providers(device: str) -> list[str]:
    """onnxruntime providers for `device`; PbdError naming the extra when CUDA is missing."""
    ort = _onnxruntime(device)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise PbdError(
            "onnxruntime here has no CUDA provider; install it with: pip install 'pbd-deploy[gpu]'"
        )
    return ["CUDAExecutionProvider"]


def _ort_runner(source: Source, config: BenchConfig, workdir: Path) -> Runner:
    if source.kind == "engine":
        raise PbdError(f"{source.path} is a TensorRT engine; run it with --backend trt")
    ort = _onnxruntime(config.device)
    providers = ort_providers(config.device)
    if source.kind == "dir" and source.onnx_path is None:
        source.onnx_path = export_for_bench(source, config, workdir)
    path = source.onnx_path or source.path
    options = ort.SessionOptions()
    # A fixed thread count (and no inter-op pool) so runs are comparable on a shared CPU.
    options.intra_op_num_threads = config.threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise PbdError(f"onnxruntime cannot load {path}: {exc}") from None
    inp = session.get_inputs()[0]
    shape = resolve_shape(inp.shape, config, source.path)
    if source.shape is None:
        source.shape = shape
    elif tuple(shape) != tuple(source.shape):
        raise PbdError(f"{path} expects input {shape}, the model directory {source.shape}")
    feed = {inp.name: _frames(shape).numpy().astype(np.float32)}
    info = {"providers": session.get_providers(), "threads": options.intra_op_num_threads}
    return Runner(source, "ort", config.device, lambda: session.run(None, feed), info=info)


def export_for_bench(source: Source, config: BenchConfig, workdir: Path) -> Path:
    """Export a model directory to ONNX at the benchmarked shape (static, like a deployment)."""
    from pbd_deploy.export.onnx import export_onnx

    path = Path(tempfile.mkdtemp(dir=workdir)) / "model.onnx"
    model = source.model.to("cpu").eval()
    return Path(export_onnx(model, path, window=source.shape[2], batch=config.batch))


def _trt_runner(source: Source, config: BenchConfig) -> Runner:
    trt = require("tensorrt", "trt")
    if source.kind != "engine":
        raise PbdError(
            f"the trt backend runs .engine files; build one from {source.path} with "
            "`pbd-deploy export --trt` on the target device"
        )
    if not torch.cuda.is_available():
        raise PbdError("the trt backend needs a CUDA GPU and a CUDA build of torch; none found")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(source.path.read_bytes())
    if engine is None:
        raise PbdError(f"{source.path} does not load with TensorRT {trt.__version__} on this GPU")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    declared = list(engine.get_tensor_shape(inputs[0]))
    dynamic = [d < 0 for d in declared]
    if any(dynamic):  # the profile's optimum, except what --batch / --window set
        opt = list(engine.get_tensor_profile_shape(inputs[0], 0)[1])
        declared = [o if d < 0 else d for d, o in zip(declared, opt)]
        declared[0] = config.batch if dynamic[0] else declared[0]
        if len(declared) > 2 and dynamic[2] and config.window:
            declared[2] = config.window
    shape = resolve_shape(declared, config, source.path)
    source.shape = source.shape or shape
    context.set_input_shape(inputs[0], shape)
    buffers = {}
    for name in names:
        dtype = torch.from_numpy(np.zeros(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
        dims = tuple(context.get_tensor_shape(name))
        buffers[name] = torch.randn(dims, device="cuda").to(dtype)
        context.set_tensor_address(name, buffers[name].data_ptr())
    stream = torch.cuda.Stream()

    def call():
        context.execute_async_v3(stream.cuda_stream)

    info = {"tensorrt": trt.__version__}
    return Runner(source, "trt", "cuda", call, "cuda_events", stream, info)
