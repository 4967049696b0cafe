"""The GEMM probe on deployment engines: one-MatMul ONNX graphs timed by TensorRT or ONNX Runtime.

torch.matmul measures cuBLAS / oneDNN; a deployed model runs TensorRT's (or ONNX Runtime's)
kernels, which pick other tactics for thin matrices. This times each block GEMM shape as its
own one-node ONNX graph (weights as an initializer, as in the exported model; both operands as
inputs for the batched attention products) with the engine the user deploys with. No torch.

Backends: "trt" (TensorRT, strongly typed: the precision is the graph's), "ort-cuda" (ONNX
Runtime's CUDA provider, device-resident inputs through I/O binding), "ort-cpu". A sample is
the wall time of one enqueue + synchronize, so it includes the launch (a few microseconds).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from pbd_deploy.errors import PbdError
from pbd_deploy.optional import require

BACKENDS = ("trt", "ort-cuda", "ort-cpu")
_ONNX_TYPES = {"float32": 1, "float16": 10, "bfloat16": 16}  # onnx.TensorProto values


def matmul_onnx(shape, dtype: str) -> bytes:
    """A one-MatMul ONNX model for `shape` (a bench.gemm.GemmShape) as bytes.

    Inputs: "a" (m, k) or (batch, m, k); "b" as a seeded random initializer (k, n) for
    weight GEMMs, or an input (batch, k, n) for batched ones. Output "c".
    """
    onnx = require("onnx", "full")
    from onnx import helper, numpy_helper

    if dtype not in _ONNX_TYPES or dtype == "bfloat16":
        raise PbdError(f"the engine GEMM probe takes float32 or float16, not {dtype}")
    elem = _ONNX_TYPES[dtype]
    lead = [shape.batch] if shape.batch > 1 else []
    inputs = [helper.make_tensor_value_info("a", elem, [*lead, shape.m, shape.k])]
    inits = []
    if shape.batch > 1:
        inputs.append(helper.make_tensor_value_info("b", elem, [*lead, shape.k, shape.n]))
    else:
        weights = np.random.default_rng(0).standard_normal((shape.k, shape.n)).astype(dtype)
        inits.append(numpy_helper.from_array(weights, "b"))
    out = helper.make_tensor_value_info("c", elem, [*lead, shape.m, shape.n])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", inputs, [out], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by ONNX Runtime >= 1.10 and TensorRT 10's parser
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _inputs(shape, dtype: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    lead = [shape.batch] if shape.batch > 1 else []
    feeds = {"a": rng.standard_normal((*lead, shape.m, shape.k)).astype(dtype)}
    if shape.batch > 1:
        feeds["b"] = rng.standard_normal((*lead, shape.k, shape.n)).astype(dtype)
    return feeds


def _ort_call(model: bytes, shape, dtype: str, backend: str, threads: int | None):
    ort = require("onnxruntime", "gpu")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    provider = "CUDAExecutionProvider" if backend == "ort-cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise PbdError(f"--backend {backend}: ONNX Runtime here has no {provider}")
    session = ort.InferenceSession(model, options, providers=[provider])
    device = "cuda" if backend == "ort-cuda" else "cpu"
    binding = session.io_binding()
    for name, value in _inputs(shape, dtype).items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    binding.bind_output("c", device)
    return lambda: session.run_with_iobinding(binding)


def _trt_call(model: bytes, shape, dtype: str, trt=None, cuda=None):
    trt = trt or require("tensorrt", "trt")
    if cuda is None:
        from pbd_deploy.runtime.cuda import open_cuda

        cuda = open_cuda()
    logger = trt.Logger(trt.Logger.WARNING)
    with cuda.active():
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(model):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise PbdError(f"TensorRT cannot parse the {shape.op} GEMM graph: {errors[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise PbdError(f"TensorRT could not build the {shape.op} GEMM engine (see its log)")
        engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        context = engine.create_execution_context()
        feeds = _inputs(shape, dtype)
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dims = tuple(engine.get_tensor_shape(name))
            nbytes = int(np.prod(dims)) * np.dtype(dtype).itemsize
            ptr = cuda.malloc(nbytes)
            if name in feeds:
                cuda.to_device(ptr, feeds[name])
            context.set_tensor_address(name, ptr)
        cuda.synchronize()

    def call():
        with cuda.active():
            if not context.execute_async_v3(cuda.stream):
                raise PbdError("TensorRT failed to run a GEMM engine")
            cuda.synchronize()

    call.keep = (engine, context)  # the engine must outlive its context's runs
    return call


def engine_calls(shapes, dtype: str, backend: str, threads: int | None = None) -> list:
    """One callable per shape that runs its GEMM once on `backend` and waits for it."""
    if backend not in BACKENDS:
        raise PbdError(f"unknown GEMM backend {backend!r}; choose from {', '.join(BACKENDS)}")
    calls = []
    for shape in shapes:
        model = matmul_onnx(shape, dtype)
        if backend == "trt":
            calls.append(_trt_call(model, shape, dtype))
        else:
            calls.append(_ort_call(model, shape, dtype, backend, threads))
    return calls


def time_engine_gemms(shapes, dtype: str, backend: str, warmup: int, iters: int,
                      threads: int | None = None) -> list[float]:  # fmt: skip
    """Median seconds per shape on `backend`, the shapes' calls interleaved round by round."""
    calls = engine_calls(shapes, dtype, backend, threads)
    for _ in range(warmup):
        for call in calls:
            call()
    samples = [[] for _ in shapes]
    for _ in range(iters):
        for call, out in zip(calls, samples):
            start = time.perf_counter()
            call()
            out.append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]
