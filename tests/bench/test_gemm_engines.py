"""`bench gemm --backend`: one-MatMul ONNX graphs timed on deployment engines."""

import sys

import numpy as np
import onnxruntime as ort
import pytest

from pbd_deploy.bench import gemm_engines
from pbd_deploy.bench.gemm import GemmConfig, GemmShape, time_gemms
from pbd_deploy.bench.probe import probe_model
from pbd_deploy.errors import PbdError
from tests.export.fake_trt import Cuda, fake_trt

WEIGHT = GemmShape("fc1", 24, 16, 40)
BATCHED = GemmShape("q@k", 8, 12, 8, batch=3)


@pytest.mark.parametrize("shape", [WEIGHT, BATCHED])
def test_matmul_graph_computes_the_product(shape):
    session = ort.InferenceSession(gemm_engines.matmul_onnx(shape, "float32"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    feeds = gemm_engines._inputs(shape, "float32")
    (got,) = session.run(None, feeds)
    b = feeds.get("b")
    if b is None:  # the weight initializer: seeded like numpy's default_rng(0)
        b = np.random.default_rng(0).standard_normal((shape.k, shape.n)).astype(np.float32)
    np.testing.assert_allclose(got, feeds["a"] @ b, rtol=1e-5, atol=1e-4)
    lead = (shape.batch,) if shape.batch > 1 else ()
    assert got.shape == (*lead, shape.m, shape.n)


def test_probe_on_onnx_runtime():
    config = GemmConfig(tokens=[64], iters=2, warmup=1, threads=1, backend="ort-cpu")
    result = probe_model("videomae-tiny", 1, config)
    rows = [r for r in result["rows"] if r["op"] != "block"]
    assert rows and all(r["seconds"] > 0 and r["gflops_per_s"] > 0 for r in rows)


def test_tensorrt_backend_builds_strongly_typed_engines(monkeypatch):
    trt = fake_trt("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    import pbd_deploy.runtime.cuda as cuda_module

    monkeypatch.setattr(cuda_module, "open_cuda", lambda: Cuda())
    config = GemmConfig(device="cuda", backend="trt", dtype="float32", iters=2, warmup=1)
    seconds = time_gemms([WEIGHT], config)
    assert len(seconds) == 1 and seconds[0] > 0
    assert trt.calls["network_flags"] == 2 and trt.calls["parsed"] == "<bytes>"  # 1 << 1 on 10.x


def test_backend_and_device_must_agree():
    with pytest.raises(PbdError, match="--backend trt runs on the GPU: pass --device cuda"):
        GemmConfig(backend="trt")
    with pytest.raises(PbdError, match="pass --device cpu"):
        GemmConfig(backend="ort-cpu", device="cuda")
    with pytest.raises(PbdError, match="unknown backend"):
        GemmConfig(backend="tvm")
