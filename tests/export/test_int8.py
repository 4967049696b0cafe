"""The INT8 (QDQ) variant is what TensorRT's ONNX parser accepts."""

import onnx
import pytest
from onnx import TensorProto, numpy_helper

from tests.export.helpers import deployed


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, synth_data):
    return onnx.load(str(deployed(tmp_path_factory, synth_data) / "model.int8.onnx"))


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every initializer and typed value in the graph."""
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for v in [*graph.value_info, *graph.input, *graph.output]:
        types.setdefault(v.name, v.type.tensor_type.elem_type)
    return types


def test_no_int32_quantized_tensor(int8_model):
    # onnx-tensorrt refuses INT32 Q/DQ (only INT8/FP8/INT4 quantized tensors): the biases
    # onnxruntime quantizes by default (QuantizeBias) must stay float.
    types = _dtypes(int8_model)
    dq = [n for n in int8_model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq, "the int8 model has no DequantizeLinear nodes"
    for node in dq:
        assert types.get(node.input[0]) in (TensorProto.INT8, None), node.name
        assert types.get(node.input[0]) != TensorProto.INT32, node.name
    inits = {t.name for t in int8_model.graph.initializer}
    quantized = {n.input[0] for n in dq if n.input[0] in inits}
    assert quantized and all(types[name] == TensorProto.INT8 for name in quantized)


def test_zero_points_are_zero(int8_model):
    # TensorRT's explicit quantization is symmetric: every Q/DQ zero point must be 0.
    inits = {t.name: numpy_helper.to_array(t) for t in int8_model.graph.initializer}
    nodes = [
        n
        for n in int8_model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
    ]
    assert nodes
    for node in nodes:
        assert not inits[node.input[2]].any(), node.name
