"""One small interface over CUDA device memory, streams and graphs for the TensorRT backend.

Backed by cuda-python (`cuda.bindings`, what NVIDIA's current TensorRT samples use) or
pycuda (common on existing robot stacks), whichever is installed.
"""

from __future__ import annotations

import importlib

import numpy as np

from pbd_deploy.errors import PbdError


class CudaPython:
    """cuda.bindings.runtime (cuda-python >= 12)."""

    name = "cuda-python"

    def __init__(self):
        self.rt = importlib.import_module("cuda.bindings.runtime")
        self.stream = self._ok(self.rt.cudaStreamCreate())

    def _ok(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise PbdError(f"CUDA call failed: {self.rt.cudaGetErrorName(err)[1]}")
        return rest[0] if len(rest) == 1 else (tuple(rest) or None)

    def device(self) -> tuple[str, tuple[int, int]]:
        props = self._ok(self.rt.cudaGetDeviceProperties(0))
        return props.name.decode().rstrip("\x00"), (props.major, props.minor)

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._ok(self.rt.cudaFree(ptr))

    def to_device(self, ptr: int, array: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self.stream))

    def to_host(self, array: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, self.stream))

    def synchronize(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    def begin_capture(self) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self._ok(self.rt.cudaStreamBeginCapture(self.stream, mode))

    def end_capture(self):
        graph = self._ok(self.rt.cudaStreamEndCapture(self.stream))
        return self._ok(self.rt.cudaGraphInstantiate(graph, 0))

    def launch(self, graph_exec) -> None:
        self._ok(self.rt.cudaGraphLaunch(graph_exec, self.stream))


class PyCuda:
    """pycuda.driver with its own context (pycuda.autoinit)."""

    name = "pycuda"

    def __init__(self):
        importlib.import_module("pycuda.autoinit")
        self.drv = importlib.import_module("pycuda.driver")
        self._stream = self.drv.Stream()
        self.stream = self._stream.handle
        self._allocs = {}

    def device(self) -> tuple[str, tuple[int, int]]:
        dev = self.drv.Context.get_device()
        return dev.name(), tuple(dev.compute_capability())

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(nbytes)
        self._allocs[int(alloc)] = alloc  # keep the owner alive until free()
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def to_device(self, ptr: int, array: np.ndarray) -> None:
        self.drv.memcpy_htod_async(ptr, array, self._stream)

    def to_host(self, array: np.ndarray, ptr: int) -> None:
        self.drv.memcpy_dtoh_async(array, ptr, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    # pycuda has no stream-capture API; the backend then runs without graph replay.
    begin_capture = end_capture = launch = None


def open_cuda():
    """The first installed CUDA binding: cuda-python, then pycuda."""
    errors = []
    for cls, module in ((CudaPython, "cuda.bindings.runtime"), (PyCuda, "pycuda.driver")):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            errors.append(f"{module}: {exc}")
            continue
        return cls()
    raise PbdError(
        "running a TensorRT engine needs cuda-python or pycuda ("
        + "; ".join(errors)
        + "); install it with: pip install 'pbd-deploy[trt]'"
    )
