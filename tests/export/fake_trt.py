"""A stand-in for the `tensorrt` module (10.x or 11.x) and for a CUDA device, for tests.

Only the names pbd-deploy uses exist, and each behaves as TensorRT documents it; the enum
values are the ones of TensorRT's headers, so flag arithmetic (`1 << int(flag)`) gives what
the real library would receive. Sources (github.com/NVIDIA/TensorRT, tags v10.3.0 / v11.0):
  - include/NvInfer.h `enum class NetworkDefinitionCreationFlag`: 10.3 kEXPLICIT_BATCH = 0
    (deprecated), kSTRONGLY_TYPED = 1; 11.0 kSTRONGLY_TYPED = 0 (deprecated, always on),
    kPREFER_JIT_PYTHON_PLUGINS = 1, kPREFER_AOT_PYTHON_PLUGINS = 2.
  - include/NvInfer.h `enum class BuilderFlag`: 10.3 kFP16 = 0, kINT8 = 1, kDEBUG = 2,
    kGPU_FALLBACK = 3, kREFIT = 4; 11.0 removed kFP16 / kINT8 (weak typing), the rest keep
    their values.
  - include/NvInfer.h `enum class MemoryPoolType`: kWORKSPACE = 0, kDLA_MANAGED_SRAM = 1.
  - include/NvInferRuntime.h `enum class DeviceType`: kGPU = 0, kDLA = 1;
    `ProfilingVerbosity`: kLAYER_NAMES_ONLY = 0, kNONE = 1, kDETAILED = 2;
    `LayerInformationFormat`: kONELINE = 0, kJSON = 1.
  - include/NvInferRuntimeBase.h `enum class TensorIOMode`: kNONE = 0, kINPUT = 1, kOUTPUT = 2.
  - `IBuilderConfig::setTimingCache(cache, ignoreMismatch)` returns bool: "true if set
    successfully, false otherwise"; a cache from another TensorRT version or device is
    refused (NvInfer.h; python/src/infer/pyCore.cpp binds it as `set_timing_cache`).
  - `IExecutionContext::setInputShape` / `setTensorAddress` / `enqueueV3` return bool
    (python: `set_input_shape`, `set_tensor_address`, `execute_async_v3`).
  - `IBuilder::buildSerializedNetwork` returns None on failure; `IRuntime::
    deserializeCudaEngine` returns None for an engine it cannot load.
DLA: 11.0 to 11.3 have no DLA (docs.nvidia.com/deeplearning/tensorrt/11.3.0/
inference-library/work-with-dla.html), so the stand-in of those versions has no DLA cores.

The serialized "engine" is the JSON of the recorded builder calls; running it computes a
simple function of the input (per batch item: mean + position, plus the item's "valid"
for a masked model's second input), so stale or mixed-up outputs show.
"""

from __future__ import annotations

import json
import threading
from enum import IntEnum
from types import SimpleNamespace

import numpy as np


def _enum(name: str, values: dict[str, int]) -> type[IntEnum]:
    return IntEnum(name, values)


def fake_trt(
    version: str, num_dla_cores: int | None = None, cache_tag: str = "sm90"
) -> SimpleNamespace:
    """The `tensorrt` module of `version` ("10.3.0", "11.0.0"...).

    Args:
        num_dla_cores: DLA cores of the device; default 2 on 10.x (Orin), 0 on 11.0-11.3.
        cache_tag: the device a timing cache is valid for (a cache of another version or
            tag is refused by `set_timing_cache`, as TensorRT does).
    """
    major, minor = (int(p) for p in version.split(".")[:2])
    calls: dict = {"flags": [], "profiles": [], "pool": {}, "set_cache": []}
    if major == 10:
        creation = _enum(
            "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        )
        builder_flags = {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4}
    else:
        creation = _enum(
            "NetworkDefinitionCreationFlag",
            {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2},
        )
        builder_flags = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4}
    BuilderFlag = _enum("BuilderFlag", builder_flags)  # noqa: N806
    DeviceType = _enum("DeviceType", {"GPU": 0, "DLA": 1})  # noqa: N806
    MemoryPoolType = _enum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})  # noqa: N806
    TensorIOMode = _enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})  # noqa: N806
    ProfilingVerbosity = _enum(  # noqa: N806
        "ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2}
    )
    LayerInformationFormat = _enum("LayerInformationFormat", {"ONELINE": 0, "JSON": 1})  # noqa: N806
    # NvInferRuntimeBase.h `enum class DataType` (10.x / 11.x): kINT64 = 8
    DataType = _enum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "INT64": 8})  # noqa: N806
    if num_dla_cores is None:
        num_dla_cores = 2 if major == 10 else 0
    header = f"trt{version}|{cache_tag}|".encode()

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self):
            body = self.data[len(header) :] if self.data.startswith(header) else b""
            return header + body + b"+"  # a build adds its tactic timings

    class Config:
        def __init__(self):
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1
            self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            calls["pool"][pool.name] = size

        def set_flag(self, flag):
            calls["flags"].append(BuilderFlag(flag).name)

        def add_optimization_profile(self, profile):
            calls["profiles"] += profile.inputs  # one entry per input of the profile
            return 0

        def create_timing_cache(self, data):
            calls["cache_in"] = bytes(data)
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            ok = not cache.data or cache.data.startswith(header) or bool(ignore_mismatch)
            calls["set_cache"].append(ok)
            if ok:
                self.cache = cache
            return ok

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def __init__(self):
            self.inputs = []

        def set_shape(self, name, lo, opt, hi):
            self.inputs.append({"input": name, "min": list(lo), "opt": list(opt), "max": list(hi)})

    class Builder:
        def __init__(self, logger):
            self.num_DLA_cores = num_dla_cores

        def create_network(self, flags=0):
            calls["network_flags"] = int(flags)
            return SimpleNamespace(io=None)

        def create_builder_config(self):
            calls["config"] = Config()
            return calls["config"]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["dla"] = config.DLA_core if config.default_device_type == DeviceType.DLA else None
            calls["profiling_verbosity"] = ProfilingVerbosity(config.profiling_verbosity).name
            strongly_typed = calls["network_flags"] & (1 << int(creation.STRONGLY_TYPED))
            if major >= 11 or strongly_typed:
                # a strongly typed network takes no precision flags (TensorRT refuses them)
                if {"FP16", "INT8"} & set(calls["flags"]):
                    return None
            record = {k: v for k, v in calls.items() if k not in ("config", "cache_in")}
            record["io"] = network.io
            return json.dumps(record, default=str).encode()

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            import onnx

            calls["parsed"] = str(path)
            return self._read(onnx.load(str(path), load_external_data=False))

        def parse(self, model, path=None):  # pyOnnx.cpp: parse(model: bytes, path=None) -> bool
            import onnx

            calls["parsed"] = "<bytes>"
            return self._read(onnx.load_from_string(bytes(model)))

        def _read(self, model):
            dims = lambda v: [d.dim_value or -1 for d in v.type.tensor_type.shape.dim]  # noqa: E731
            self.network.io = {
                "inputs": {i.name: dims(i) for i in model.graph.input},
                "outputs": {o.name: dims(o) for o in model.graph.output},
                # ONNX TensorProto.INT64 = 7: a masked model's "valid" input
                "int64": [i.name for i in model.graph.input if i.type.tensor_type.elem_type == 7],
            }
            return True

        def get_error(self, i):
            return "no error"

    class Inspector:
        def __init__(self, record):
            self.record = record

        def get_engine_information(self, fmt):
            assert fmt == LayerInformationFormat.JSON
            on_dla = self.record.get("dla") is not None
            if self.record["profiling_verbosity"] != "DETAILED":
                return json.dumps({"Layers": ["conv", "matmul"]})
            layers = [
                {"Name": "{ForeignNode[/conv...]}", "LayerType": "DLA" if on_dla else "Myelin"},
                {"Name": "/head/matmul", "LayerType": "MatrixMultiply"},
            ]
            return json.dumps({"Layers": layers, "Bindings": []})

    class Engine:
        def __init__(self, record):
            self.record = record
            io = record["io"]
            self.shapes = {**io["inputs"], **io["outputs"]}
            self.inputs = list(io["inputs"])
            self.num_io_tensors = len(self.shapes)

        def get_tensor_name(self, i):
            return list(self.shapes)[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return list(self.shapes[name])

        def get_tensor_dtype(self, name):
            return DataType.INT64 if name in self.record["io"].get("int64", []) else DataType.FLOAT

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            return Inspector(self.record)

    class Context:
        """Shapes and addresses as set; `execute_async_v3` enqueues onto the fake stream."""

        fail_next = False  # a test sets it to make the next enqueue return False

        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            prof = {p["input"]: p for p in self.engine.record["profiles"]}.get(name)
            fixed = self.engine.shapes[name]
            if prof is not None:
                ok = all(lo <= s <= hi for lo, s, hi in zip(prof["min"], shape, prof["max"]))
            else:
                ok = list(shape) == list(fixed)
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def get_tensor_shape(self, name):
            if name in self.engine.inputs:  # a static input needs no set_input_shape
                return self.shapes.get(name, tuple(self.engine.shapes[name]))
            batch = self.get_tensor_shape(self.engine.inputs[0])[0]
            return (batch, *self.engine.shapes[name][1:])

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            if Context.fail_next:
                Context.fail_next = False
                return False
            cuda = Cuda.by_stream[stream_handle]
            name, *more = self.engine.inputs  # the model input, then a masked model's "valid"
            addresses = dict(self.addresses)  # what the enqueue (and a captured graph) uses
            shapes = {n: self.get_tensor_shape(n) for n in self.engine.shapes}

            def kernel():
                x = cuda.mem[addresses[name]].view(np.float32)[: int(np.prod(shapes[name]))]
                x = x.reshape(shapes[name])
                level = x.reshape(len(x), -1).mean(1)
                for extra in more:  # valid head points (int64): added, so a wrong feed shows
                    level = level + cuda.mem[addresses[extra]].view(np.int64)[: len(x)]
                for out, shape in shapes.items():
                    if out in self.engine.inputs:
                        continue
                    pos = np.arange(int(np.prod(shape[1:])), dtype=np.float32).reshape(shape[1:])
                    y = level.reshape(-1, *[1] * (len(shape) - 1)) + pos
                    cuda.mem[addresses[out]].view(np.float32)[: y.size] = y.ravel()

            cuda.enqueue(kernel)
            return True

    class Runtime:
        def __init__(self, logger):
            self.num_DLA_cores = num_dla_cores

        def deserialize_cuda_engine(self, data):
            try:
                return Engine(json.loads(bytes(data)))
            except ValueError:
                return None

    def nptype(dtype):
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT64: np.int64}[
            dtype
        ]

    logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    return SimpleNamespace(
        __version__=version,
        calls=calls,
        Logger=logger,
        Builder=Builder,
        Runtime=Runtime,
        OnnxParser=OnnxParser,
        BuilderFlag=BuilderFlag,
        NetworkDefinitionCreationFlag=creation,
        MemoryPoolType=MemoryPoolType,
        DeviceType=DeviceType,
        TensorIOMode=TensorIOMode,
        ProfilingVerbosity=ProfilingVerbosity,
        LayerInformationFormat=LayerInformationFormat,
        DataType=DataType,
        nptype=nptype,
        Context=Context,
    )


class Cuda:
    """A stand-in for runtime/cuda.py's interface: host memory as "device" memory, one
    stream whose work runs at `synchronize`, and graphs that replay captured work.

    It records what a leak check needs: live allocations, graphs, page-locked buffers,
    and whether a capture is still open.
    """

    by_stream: dict = {}
    name = "fake-cuda"

    def __init__(self, device=("NVIDIA H100 80GB HBM3", (9, 0)), sm_count=132):
        self._device, self._sm_count = device, sm_count
        self.stream = id(self)
        Cuda.by_stream[self.stream] = self
        self.mem: dict[int, np.ndarray] = {}
        self.pinned: dict[int, np.ndarray] = {}
        self.queue, self.capturing, self.graphs = [], None, {}
        self.next_ptr, self.captures, self.threads = 4096, 0, set()

    def device(self):
        return self._device

    def sm_count(self):
        return self._sm_count

    def active(self):
        self.threads.add(threading.get_ident())
        return _nullcontext()

    def malloc(self, nbytes):
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + nbytes + 256
        self.mem[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def free(self, ptr):
        del self.mem[ptr]

    def host_empty(self, shape, dtype):
        array = np.empty(shape, dtype)
        self.pinned[array.ctypes.data] = array
        return array

    def free_host(self, array):
        del self.pinned[array.ctypes.data]

    def enqueue(self, work):
        (self.capturing if self.capturing is not None else self.queue).append(work)

    def to_device(self, ptr, array):
        data = np.ascontiguousarray(array).view(np.uint8).ravel().copy()
        self.enqueue(lambda: self.mem[ptr].__setitem__(slice(0, data.size), data))

    def to_host(self, array, ptr):
        def copy():
            array.view(np.uint8).ravel()[:] = self.mem[ptr][: array.nbytes]

        self.enqueue(copy)

    def synchronize(self):
        assert self.capturing is None, "synchronize during capture"
        while self.queue:
            self.queue.pop(0)()

    def begin_capture(self):
        assert self.capturing is None
        self.capturing, self.captures = [], self.captures + 1

    def end_capture(self):
        work, self.capturing = self.capturing, None
        handle = object()
        self.graphs[id(handle)] = work
        return handle

    def launch(self, graph):
        self.queue.extend(self.graphs[id(graph)])

    def destroy_graph(self, graph):
        del self.graphs[id(graph)]


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
