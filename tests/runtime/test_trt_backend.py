"""TrtBackend on the stand-ins: CUDA graphs per shape, failed captures, threads, pycuda.

The fake engine computes mean(input) + position per batch item (tests/export/fake_trt.py),
so a replayed graph that returned another shape's or an old run's outputs would show.
"""

import sys
import threading
import types

import numpy as np
import pytest

from pbd_deploy.errors import PbdError
from pbd_deploy.runtime.engine_meta import DeviceInfo
from tests.export.fake_trt import Cuda, fake_trt
from tests.export.helpers import fake_dynamic_engine

H100 = DeviceInfo("10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), 132)


@pytest.fixture
def backend(tmp_path_factory, synth_data, tmp_path, monkeypatch):
    """A TrtBackend over a dynamic-batch fake engine, with the fake CUDA device."""
    import pbd_deploy.runtime.trt_backend as module

    trt = fake_trt("10.3.0")
    engine = fake_dynamic_engine(tmp_path_factory, synth_data, tmp_path, trt, H100)
    cuda = Cuda()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(module, "open_cuda", lambda: cuda)
    yield module.TrtBackend(engine), cuda
    trt.Context.fail_next = False


def _expected(x, scores_shape):
    level = x.reshape(len(x), -1).mean(1)
    n = int(np.prod(scores_shape[1:]))
    return level[:, None] + np.arange(n, dtype=np.float32)[None]


def test_graphs_per_shape_replay_correct_outputs(backend):
    trt_backend, cuda = backend
    rng = np.random.default_rng(0)
    for i, batch in enumerate([2, 2, 1, 2, 1, 2, 1]):  # a short last batch alternating
        x = rng.normal(size=(batch, 3, 32, 32, 32)).astype(np.float32) + i
        scores, segments = trt_backend.run(x)
        np.testing.assert_allclose(scores.reshape(batch, -1), _expected(x, scores.shape),
                                   rtol=1e-5, atol=1e-4)  # fmt: skip
        assert segments.shape[0] == batch
    assert cuda.captures == 2 and len(cuda.graphs) == 2  # one per shape, never recaptured
    assert len(cuda.pinned) == len(cuda.mem) == 6  # page-locked host + device, 3 tensors x 2
    trt_backend.close()
    assert not cuda.graphs and not cuda.mem and not cuda.pinned  # everything released


def test_a_failed_capture_raises_and_leaves_capture_mode(backend):
    trt_backend, cuda = backend
    x = np.ones((2, 3, 32, 32, 32), np.float32)
    sys.modules["tensorrt"].Context.fail_next = True
    with pytest.raises(PbdError, match="TensorRT execution failed"):
        trt_backend.run(x)  # a plain enqueue returning False
    original = sys.modules["tensorrt"].Context.execute_async_v3
    calls = []

    def fail_during_capture(self, stream):
        calls.append(cuda.capturing is not None)
        return False if cuda.capturing is not None else original(self, stream)

    sys.modules["tensorrt"].Context.execute_async_v3 = fail_during_capture
    try:
        with pytest.raises(PbdError, match="could not enqueue the engine while capturing"):
            trt_backend.run(x)
    finally:
        sys.modules["tensorrt"].Context.execute_async_v3 = original
    assert calls == [False, True]
    assert cuda.capturing is None and not cuda.graphs  # capture ended, the graph destroyed

    def raise_during_capture(self, stream):
        if cuda.capturing is not None:
            raise RuntimeError("boom")
        return original(self, stream)

    y = np.ones((1, 3, 32, 32, 32), np.float32)
    sys.modules["tensorrt"].Context.execute_async_v3 = raise_during_capture
    try:
        with pytest.raises(RuntimeError, match="boom"):
            trt_backend.run(y)
    finally:
        sys.modules["tensorrt"].Context.execute_async_v3 = original
    assert cuda.capturing is None and not cuda.graphs


def test_runs_from_another_thread_match(backend):
    trt_backend, cuda = backend
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32, 32)).astype(np.float32)
    here = trt_backend.run(x)
    there = {}
    worker = threading.Thread(target=lambda: there.update(out=trt_backend.run(x)))
    worker.start()
    worker.join()
    np.testing.assert_array_equal(here[0], there["out"][0])  # same engine, same buffers
    assert len(cuda.threads) == 2  # both threads entered the CUDA context


class _FakeDriver(types.ModuleType):
    """pycuda.driver with per-thread context stacks: every call checks that the primary
    context is current on the calling thread, as the real driver API needs."""

    def __init__(self):
        super().__init__("pycuda.driver")
        self.local = threading.local()
        self.primary = object()
        driver = self

        class Context:
            def __init__(self, handle):
                self.handle = handle

            def push(self):
                driver.stack().append(self.handle)

            @staticmethod
            def pop():
                driver.stack().pop()

            @staticmethod
            def get_device():
                return Device(0)

        class Device:
            def __init__(self, i):
                pass

            def retain_primary_context(self):
                return Context(driver.primary)

            def make_context(self):  # what pycuda.autoinit does: a non-primary context
                ctx = Context(object())
                ctx.push()
                return ctx

            def name(self):
                return "Orin"

            def compute_capability(self):
                return (8, 7)

            def get_attribute(self, attr):
                return 16

        class Stream:
            def __init__(self):
                driver.need()
                self.handle = 7

            def synchronize(self):
                driver.need()

        class Alloc(int):
            def free(self):
                driver.need()

        self.Context, self.Device, self.Stream = Context, Device, Stream
        self.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT=16)
        self.init = lambda: None
        self.mem_alloc = lambda n: (self.need(), Alloc(4096))[1]
        self.memcpy_htod_async = lambda ptr, a, s: self.need()
        self.memcpy_dtoh_async = lambda a, ptr, s: self.need()
        self.pagelocked_empty = lambda shape, dtype: (self.need(), np.empty(shape, dtype))[1]

    def stack(self):
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def need(self):
        if not self.stack() or self.stack()[-1] is not self.primary:
            raise RuntimeError("cuMemAlloc failed: invalid device context")


def test_pycuda_uses_the_primary_context_on_every_thread(monkeypatch):
    from pbd_deploy.runtime.cuda import PyCuda

    driver = _FakeDriver()
    autoinit = types.ModuleType("pycuda.autoinit")  # importing it would make a new context
    autoinit.context = driver.Device(0).make_context()
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    for name, module in (("pycuda", pycuda), ("pycuda.driver", driver),
                         ("pycuda.autoinit", autoinit)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    driver.Context.pop()  # the autoinit context is not current any more
    cuda = PyCuda()
    assert cuda.sm_count() == 16
    errors = []

    def work():
        try:
            with cuda.active():
                host = cuda.host_empty((2, 3), np.float32)
                ptr = cuda.malloc(host.nbytes)
                cuda.to_device(ptr, host)
                cuda.to_host(host, ptr)
                cuda.synchronize()
                cuda.free(ptr)
            assert driver.stack() == []  # popped again: the thread's own state untouched
        except Exception as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert not errors, errors
