"""export_onnx: the graph contract, parity with Detector.predict, dynamic axes, dropped blocks."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pbd_deploy.compress.blocks import drop_block
from pbd_deploy.errors import PbdError
from pbd_deploy.export.onnx import count_ops, export_onnx
from pbd_deploy.models.actionformer import HeadConfig
from pbd_deploy.models.detector import Detector, DetectorConfig, InputConfig
from tests.conftest import tiny_config


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _torch(model, x):
    with torch.no_grad():
        return [t.numpy() for t in model.predict(x)]


def test_graph_contract_and_parity(tiny_model, tmp_path):
    path = export_onnx(tiny_model, tmp_path / "m.onnx", batch=2)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    n, k = len(tiny_model.positions), tiny_model.num_classes
    assert [(i.name, dims(i)) for i in model.graph.input] == [("frames", [2, 3, 32, 32, 32])]
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        ("scores", [2, n, k]),
        ("segments", [2, n, 2]),
    ]
    x = torch.randn(2, 3, 32, 32, 32)
    for got, ref in zip(_run(path, x), _torch(tiny_model, x)):
        assert np.abs(got - ref).max() <= 1e-4


def test_dynamic_batch_and_time(tiny_model, tmp_path):
    path = export_onnx(tiny_model, tmp_path / "m.onnx", dynamic=True)
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in shape] == ["batch", 3, "time", 32, 32]
    # 64 frames give 32 backbone tokens for a 16-point head: the resize must be in the graph.
    for batch, frames in ((1, 32), (3, 64)):
        x = torch.randn(batch, 3, frames, 32, 32)
        for got, ref in zip(_run(path, x), _torch(tiny_model, x)):
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() <= 1e-4


def _matmuls(path) -> int:
    ops = count_ops(path)
    return ops["MatMul"] + ops["Gemm"]  # static shapes turn Linear into Gemm


def test_dropped_blocks_are_absent_from_the_graph(tmp_path):
    torch.manual_seed(0)
    model = Detector(tiny_config(depth=4)).eval()
    block = model.backbone.blocks[0]
    # Per block: one matrix product per Linear plus two in attention (q k^T and attn v).
    per_block = sum(isinstance(m, nn.Linear) for m in block.modules()) + 2
    counts = {4: _matmuls(export_onnx(model, tmp_path / "4.onnx"))}
    model = drop_block(drop_block(model, 1), 2)
    counts[2] = _matmuls(export_onnx(model, tmp_path / "2.onnx"))
    head = counts[4] - 4 * per_block  # the head's products, which dropping leaves alone
    assert head > 0
    assert counts[2] - head == 2 * per_block  # backbone products proportional to kept blocks


def test_window_must_be_a_multiple_of_the_chunk(tiny_model, tmp_path):
    with pytest.raises(PbdError, match="not a multiple of the 16-frame chunk"):
        export_onnx(tiny_model, tmp_path / "m.onnx", window=40)
    assert not list(tmp_path.iterdir())


def test_feature_mode_model(tmp_path):
    config = DetectorConfig(
        name="features",
        class_names=["a", "b"],
        input=InputConfig(mode="features", window=24, feature_dim=12, feature_stride=4.0),
        backbone=None,
        head=HeadConfig(
            in_dim=12,
            dim=16,
            length=24,
            levels=2,
            heads=2,
            attn_window=5,
            regression_ranges=[[0, 4], [4, 10000]],
        ),
    )
    torch.manual_seed(0)
    model = Detector(config).eval()
    path = export_onnx(model, tmp_path / "f.onnx", batch=2)
    assert onnx.load(str(path)).graph.input[0].name == "features"
    x = torch.randn(2, 12, 24)
    for got, ref in zip(_run(path, x), _torch(model, x)):
        assert np.abs(got - ref).max() <= 1e-4
