"""TensorRT backend: one engine, named-tensor I/O (`set_tensor_address` + `execute_async_v3`).

Written against the TensorRT 10/11 API only (no binding indices, no implicit batch, no
`execute_async_v2`). Each input shape gets its own device buffers, page-locked host buffers
and, after its first run, a CUDA graph of the enqueue that later runs replay (no per-layer
launch overhead on small Jetson GPUs). A dynamic last batch that alternates with the full
one therefore replays two graphs instead of recapturing at every switch. Everything is
released by `close()`.

The runtime is usable from any thread: every CUDA call runs with the device's primary
context current (see runtime/cuda.py), and one lock serialises runs of one backend.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pbd_deploy.core.windows import VALID_NAME, point_positions, valid_input
from pbd_deploy.errors import PbdError
from pbd_deploy.optional import require
from pbd_deploy.runtime.cuda import open_cuda
from pbd_deploy.runtime.engine_meta import (
    DeviceInfo,
    check_engine_bytes,
    check_engine_fits,
    read_metadata,
)
from pbd_deploy.runtime.kernels import load_kernels

log = logging.getLogger(__name__)


def device_info(trt, cuda) -> DeviceInfo:
    name, cc = cuda.device()
    return DeviceInfo(trt.__version__, name, tuple(cc), cuda.sm_count())


@dataclass
class _ShapeState:
    """Buffers (name -> (page-locked host array, device pointer)) and graph of one shape."""

    buffers: dict = field(default_factory=dict)
    graph: object = None
    runs: int = 0


class TrtBackend:
    """Runs model.engine; refuses one built for another TensorRT version or GPU, or one
    whose bytes are not those its metadata was written for."""

    def __init__(self, path: Path, use_cuda_graph: bool = True, use_kernels: bool = True):
        trt = require("tensorrt", "trt")
        path = Path(path)
        self.trt, self.cuda = trt, open_cuda()
        self.metadata = read_metadata(path)
        data = path.read_bytes()
        check_engine_bytes(self.metadata, data, path)
        check_engine_fits(self.metadata, device_info(trt, self.cuda), path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        with self.cuda.active():
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(data)
            if engine is None:
                raise PbdError(f"TensorRT could not deserialize {path}; rebuild it on this device")
            self.engine, self.context = engine, engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in inputs]
        # a masked model's second input: valid head points per window, int64 (B,)
        self.valid_name = VALID_NAME if VALID_NAME in inputs else None
        self.input_name = next(n for n in inputs if n != VALID_NAME)
        self.input_shape = list(engine.get_tensor_shape(self.input_name))  # -1: dynamic
        self.providers = ["TensorRT " + trt.__version__]
        self.use_cuda_graph = use_cuda_graph and self.cuda.begin_capture is not None
        self._states: dict[tuple, _ShapeState] = {}
        self._bound: tuple | None = None  # the shape the context's addresses point at
        self._lock = threading.Lock()
        # CUDA pre/post-processing kernels (runtime/kernels.py), None: numpy on the CPU
        self.kernels = self._load_kernels() if use_kernels else None

    def _load_kernels(self):
        dtypes = {n: np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(n))) for n in
                  (self.input_name, *self.output_names)}  # fmt: skip
        if dtypes[self.input_name] not in (np.float32, np.float16) or any(
            dtypes[n] != np.float32 for n in self.output_names
        ):
            log.info("CUDA kernels not used: engine I/O types %s (need fp32/fp16 in, fp32 out)",
                     {n: str(d) for n, d in dtypes.items()})  # fmt: skip
            return None
        with self.cuda.active():
            return load_kernels(self.cuda)

    @property
    def static_batch(self) -> int | None:
        return self.input_shape[0] if self.input_shape[0] > 0 else None

    def _set_shapes(self, shape: tuple[int, ...]) -> bool:
        ok = self.context.set_input_shape(self.input_name, shape)
        if ok and self.valid_name is not None:
            ok = self.context.set_input_shape(self.valid_name, shape[:1])
        return ok

    def _state(self, shape: tuple[int, ...]) -> _ShapeState:
        """This shape's buffers (allocated on first use), bound to the execution context."""
        state = self._states.get(shape)
        if state is None:
            if not self._set_shapes(shape):
                raise PbdError(f"input shape {shape} is outside the engine's optimization profile")
            state = self._states[shape] = _ShapeState()
            extra = [self.valid_name] if self.valid_name else []
            for name in (self.input_name, *extra, *self.output_names):
                dims = tuple(self.context.get_tensor_shape(name))
                dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
                host = self.cuda.host_empty(dims, dtype)
                state.buffers[name] = (host, self.cuda.malloc(max(host.nbytes, 1)))
        elif self._bound != shape and not self._set_shapes(shape):
            raise PbdError(f"input shape {shape} is outside the engine's optimization profile")
        if self._bound != shape:
            for name, (_, ptr) in state.buffers.items():
                if not self.context.set_tensor_address(name, ptr):
                    raise PbdError(f"TensorRT refused the device buffer of {name}")
            self._bound = shape
        return state

    def _enqueue(self, state: _ShapeState) -> None:
        if state.graph is not None:
            self.cuda.launch(state.graph)
        elif not self.context.execute_async_v3(self.cuda.stream):
            raise PbdError("TensorRT execution failed (see the TensorRT log above)")

    def _capture(self, state: _ShapeState) -> None:
        """Capture this shape's enqueue into a CUDA graph (after one plain run: TensorRT
        finishes lazy set-up on the first enqueue)."""
        try:
            self.cuda.begin_capture()
        except PbdError as exc:  # e.g. a driver without capture support: run without graphs
            log.info("CUDA graph capture unavailable, running without it: %s", exc)
            self.use_cuda_graph = False
            return
        ok = False
        try:
            ok = bool(self.context.execute_async_v3(self.cuda.stream))
        finally:
            # Always leave capture mode, or every later call on the stream fails; a graph
            # of a failed enqueue is incomplete (replaying it returns stale outputs): drop it.
            graph = self.cuda.end_capture()
            if not ok:
                self.cuda.destroy_graph(graph)
        if not ok:
            raise PbdError(
                "TensorRT could not enqueue the engine while capturing a CUDA graph; run it "
                "with use_cuda_graph=False (engines with DLA layers cannot be captured)"
            )
        state.graph = graph

    def _put_valid(self, state: _ShapeState, valid) -> None:
        """A masked engine's "valid" input (head points per window) to the device."""
        if self.valid_name is None:
            return
        if valid is None:
            raise PbdError("this engine has a padding-mask input 'valid': pass valid head points")
        host, ptr = state.buffers[self.valid_name]
        np.copyto(host, np.asarray(valid, dtype=np.int64))
        self.cuda.to_device(ptr, host)

    def run(self, x: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, segments) of a batch; `valid` (B,) int64 for a masked engine."""
        with self._lock, self.cuda.active():
            state = self._state(tuple(x.shape))
            host, ptr = state.buffers[self.input_name]
            np.copyto(host, x, casting="same_kind")
            self.cuda.to_device(ptr, host)
            self._put_valid(state, valid)
            self._enqueue(state)
            for name in self.output_names:
                out, out_ptr = state.buffers[name]
                self.cuda.to_host(out, out_ptr)
            self.cuda.synchronize()
            state.runs += 1
            if state.runs == 1 and self.use_cuda_graph:
                self._capture(state)
            out = {n: state.buffers[n][0].copy() for n in self.output_names}
        return out["scores"].astype(np.float32), out["segments"].astype(np.float32)

    def run_windows(self, chunks, windows, spec, fps, duration, config) -> list:
        """Candidates of each window with the CUDA kernels: uint8 frames in, candidates out.

        Args:
            chunks: per window, its uint8 frames (valid, H, W, 3), at most `spec.window`.
            windows: per window, (start step, valid head points), as `sliding_windows` gives.
            spec, fps, duration, config: the WindowSpec, frame rate, clip length and
                PostprocessConfig of `core.windows.window_candidates`.

        Returns:
            (segments, scores, labels) per window, identical to window_candidates's.
        """
        batch = self.static_batch or len(chunks)
        # a static batch's unused slots repeat the last window, as Detector.predict pads
        chunks = list(chunks) + [chunks[-1]] * (batch - len(chunks))
        valid = [w[1] for w in windows]
        valid = valid_input(valid + [valid[-1]] * (batch - len(valid)))
        with self._lock, self.cuda.active():
            state = self._state((batch, 3, spec.window, spec.crop, spec.crop))
            host, ptr = state.buffers[self.input_name]
            for slot, chunk in enumerate(chunks):
                self.kernels.preprocess(chunk, spec.window, ptr, host.dtype, slot, spec)
            self._put_valid(state, valid)
            self._enqueue(state)
            shape = state.buffers["scores"][0].shape  # (B, N, K)
            parts = self.kernels.decode_topk(
                state.buffers["scores"][1], state.buffers["segments"][1], shape, windows,
                point_positions(spec), spec, fps, duration, config,
            )  # fmt: skip
            state.runs += 1
            if state.runs == 1 and self.use_cuda_graph:
                self._capture(state)
        return parts

    def close(self) -> None:
        """Release every graph and buffer (the engine itself goes with the object)."""
        if self.kernels is not None:
            with self.cuda.active():
                self.kernels.close()
        with self._lock, self.cuda.active():
            for state in self._states.values():
                if state.graph is not None:
                    self.cuda.destroy_graph(state.graph)
                for host, ptr in state.buffers.values():
                    self.cuda.free(ptr)
                    self.cuda.free_host(host)
            self._states, self._bound = {}, None
