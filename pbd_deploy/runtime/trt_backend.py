"""TensorRT backend: one engine, named-tensor I/O (`set_tensor_address` + `execute_async_v3`).

Written against the TensorRT 10/11 API only (no binding indices, no implicit batch, no
`execute_async_v2`). After the first run of an input shape the enqueue is captured into a
CUDA graph and replayed, which removes per-layer launch overhead on small Jetson GPUs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pbd_deploy.errors import PbdError
from pbd_deploy.optional import require
from pbd_deploy.runtime.cuda import open_cuda
from pbd_deploy.runtime.engine_meta import DeviceInfo, check_engine_fits, read_metadata

log = logging.getLogger(__name__)


def device_info(trt, cuda) -> DeviceInfo:
    name, cc = cuda.device()
    return DeviceInfo(trt.__version__, name, tuple(cc))


class TrtBackend:
    """Runs model.engine; refuses one built for another TensorRT version or GPU."""

    def __init__(self, path: Path, use_cuda_graph: bool = True):
        trt = require("tensorrt", "trt")
        self.trt, self.cuda = trt, open_cuda()
        self.metadata = read_metadata(path)
        check_engine_fits(self.metadata, device_info(trt, self.cuda), path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise PbdError(f"TensorRT could not deserialize {path}; rebuild it on this device")
        self.engine, self.context = engine, engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name, self.output_names = inputs[0], [n for n in names if n not in inputs]
        self.input_shape = list(engine.get_tensor_shape(self.input_name))  # -1: dynamic
        self.providers = ["TensorRT " + trt.__version__]
        self.use_cuda_graph = use_cuda_graph and self.cuda.begin_capture is not None
        self._shape, self._buffers, self._graph = None, {}, None

    @property
    def static_batch(self) -> int | None:
        return self.input_shape[0] if self.input_shape[0] > 0 else None

    def _prepare(self, shape: tuple[int, ...]) -> None:
        """(Re)allocate device buffers and bind addresses for a new input shape."""
        self.close()
        if not self.context.set_input_shape(self.input_name, shape):
            raise PbdError(f"input shape {shape} is outside the engine's optimization profile")
        for name in (self.input_name, *self.output_names):
            dims = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            host = np.empty(dims, dtype=dtype)
            ptr = self.cuda.malloc(max(host.nbytes, 1))
            self.context.set_tensor_address(name, ptr)
            self._buffers[name] = (host, ptr)
        self._shape = shape

    def _enqueue(self) -> None:
        if self._graph is not None:
            self.cuda.launch(self._graph)
            return
        if not self.context.execute_async_v3(self.cuda.stream):
            raise PbdError("TensorRT execution failed (see the TensorRT log above)")

    def _capture(self) -> None:
        # Capture after one plain run: TensorRT finishes lazy set-up on the first enqueue.
        try:
            self.cuda.begin_capture()
            self.context.execute_async_v3(self.cuda.stream)
            self._graph = self.cuda.end_capture()
        except Exception as exc:  # some engines (e.g. with DLA layers) cannot be captured
            log.info("CUDA graph capture failed, running without it: %s", exc)
            self.use_cuda_graph, self._graph = False, None

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = tuple(x.shape) != self._shape
        if first:
            self._prepare(tuple(x.shape))
        host, ptr = self._buffers[self.input_name]
        np.copyto(host, x, casting="same_kind")
        self.cuda.to_device(ptr, host)
        self._enqueue()
        for name in self.output_names:
            out, out_ptr = self._buffers[name]
            self.cuda.to_host(out, out_ptr)
        self.cuda.synchronize()
        if first and self.use_cuda_graph:
            self._capture()
        out = {n: self._buffers[n][0].copy() for n in self.output_names}
        return out["scores"].astype(np.float32), out["segments"].astype(np.float32)

    def close(self) -> None:
        for _, ptr in self._buffers.values():
            self.cuda.free(ptr)
        self._buffers, self._graph, self._shape = {}, None, None
