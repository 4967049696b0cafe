"""One small interface over CUDA device memory, streams and graphs for the TensorRT backend.

Backed by cuda-python (`cuda.bindings`, from cuda-python 12.6.1; what NVIDIA's current
TensorRT samples use) or pycuda (common on existing robot stacks), whichever is installed.

Both use the device's *primary* context, the one the CUDA runtime API (and so TensorRT)
binds on every thread. pycuda's usual `pycuda.autoinit` instead creates a separate context
that is current on the importing thread only: a ROS callback or thread-pool worker then runs
without a context, or TensorRT runs in the primary one against buffers of the other.
Every call that touches the device runs inside `active()`, which makes the primary context
current on the calling thread (a no-op for the runtime API, which does so itself).

Host staging buffers are page-locked (`host_empty`): copies from pageable memory are
staged by the driver through a pinned bounce buffer and are not asynchronous.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib

import numpy as np

from pbd_deploy.errors import PbdError


class CudaPython:
    """cuda.bindings.runtime (cuda-python >= 12.6.1)."""

    name = "cuda-python"

    def __init__(self):
        self.rt = importlib.import_module("cuda.bindings.runtime")
        self.stream = self._ok(self.rt.cudaStreamCreate())

    def _ok(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise PbdError(f"CUDA call failed: {self.rt.cudaGetErrorName(err)[1]}")
        return rest[0] if len(rest) == 1 else (tuple(rest) or None)

    def active(self):
        return contextlib.nullcontext()  # the runtime API makes the primary context current

    def _props(self):
        return self._ok(self.rt.cudaGetDeviceProperties(0))

    def device(self) -> tuple[str, tuple[int, int]]:
        props = self._props()
        return props.name.decode().rstrip("\x00"), (props.major, props.minor)

    def sm_count(self) -> int:
        return int(self._props().multiProcessorCount)

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._ok(self.rt.cudaFree(ptr))

    def host_empty(self, shape, dtype) -> np.ndarray:
        """A page-locked numpy array (cudaMallocHost); release it with `free_host`."""
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        ptr = int(self._ok(self.rt.cudaMallocHost(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def free_host(self, array: np.ndarray) -> None:
        self._ok(self.rt.cudaFreeHost(array.ctypes.data))

    def to_device(self, ptr: int, array: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self.stream))

    def to_host(self, array: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, self.stream))

    def synchronize(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    def begin_capture(self) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._ok(self.rt.cudaStreamBeginCapture(self.stream, mode))

    def end_capture(self):
        """End the capture; returns (graph, executable graph), to `destroy_graph` later."""
        graph = self._ok(self.rt.cudaStreamEndCapture(self.stream))
        try:
            return graph, self._ok(self.rt.cudaGraphInstantiate(graph, 0))
        except PbdError:
            self.rt.cudaGraphDestroy(graph)
            raise

    def launch(self, graph) -> None:
        self._ok(self.rt.cudaGraphLaunch(graph[1], self.stream))

    def destroy_graph(self, graph) -> None:
        self._ok(self.rt.cudaGraphExecDestroy(graph[1]))
        self._ok(self.rt.cudaGraphDestroy(graph[0]))


class PyCuda:
    """pycuda.driver on the device's primary context, pushed on whichever thread calls."""

    name = "pycuda"

    def __init__(self):
        self.drv = importlib.import_module("pycuda.driver")
        self.drv.init()
        self.context = self.drv.Device(0).retain_primary_context()
        with self.active():
            self._stream = self.drv.Stream()
        self.stream = self._stream.handle
        self._allocs = {}

    @contextlib.contextmanager
    def active(self):
        """The primary context current on this thread for the block."""
        self.context.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def device(self) -> tuple[str, tuple[int, int]]:
        dev = self.drv.Device(0)
        return dev.name(), tuple(dev.compute_capability())

    def sm_count(self) -> int:
        dev = self.drv.Device(0)
        return int(dev.get_attribute(self.drv.device_attribute.MULTIPROCESSOR_COUNT))

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(nbytes)
        self._allocs[int(alloc)] = alloc  # keep the owner alive until free()
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def host_empty(self, shape, dtype) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, dtype)

    def free_host(self, array: np.ndarray) -> None:
        array.base.free()

    def to_device(self, ptr: int, array: np.ndarray) -> None:
        self.drv.memcpy_htod_async(ptr, array, self._stream)

    def to_host(self, array: np.ndarray, ptr: int) -> None:
        self.drv.memcpy_dtoh_async(array, ptr, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    # pycuda has no stream-capture API; the backend then runs without graph replay.
    begin_capture = end_capture = launch = destroy_graph = None


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
        "running a TensorRT engine needs cuda-python (>= 12.6.1, the major of your CUDA "
        "toolkit) or pycuda (" + "; ".join(errors) + "); install it with: "
        "pip install 'pbd-deploy[trt]'"
    )
