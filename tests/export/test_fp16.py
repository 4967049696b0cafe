"""The fp16 rewrite and its fallbacks: LayerNorm/Softmax kept fp32 on overflow or drift."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pbd_deploy.errors import PbdError
from pbd_deploy.export import fp16
from pbd_deploy.export.fp16 import SENSITIVE_OPS, convert_fp16

FP16_MAX = float(np.finfo(np.float16).max)  # 65504


def _graph(tmp_path):
    """x (1, 4, 8) -> scores = Softmax(x), segments = LayerNorm(x)."""
    ones, zeros = np.ones(8, np.float32), np.zeros(8, np.float32)
    nodes = [
        helper.make_node("Softmax", ["x"], ["scores"], name="softmax", axis=-1),
        helper.make_node(
            "LayerNormalization", ["x", "gamma", "beta"], ["segments"], name="norm", axis=-1
        ),
    ]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8])
        for n in ("scores", "segments")
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        outputs,
        [numpy_helper.from_array(ones, "gamma"), numpy_helper.from_array(zeros, "beta")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture
def device_like_check(monkeypatch):
    """Run the fp16 check with ORT's graph optimisations off, as a device computes the file.

    With them on, ORT's CPU provider drops the fp32 -> fp16 -> fp32 Cast pairs around the
    ops it runs in fp32, so on a CPU the check cannot see an input beyond fp16's range (the
    file still overflows on a GPU). Noted as an issue of its own.
    """
    import onnxruntime as ort

    real = ort.SessionOptions

    def options():
        made = real()
        made.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return made

    monkeypatch.setattr(ort, "SessionOptions", options)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _fp16_ops(path):
    """Op types whose first input is fp16 in the rewritten graph."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    return {n.op_type for n in model.graph.node if types.get(n.input[0]) == TensorProto.FLOAT16}


def _run(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_plain_rewrite_is_kept_when_it_is_accurate(tmp_path):
    x = np.random.default_rng(0).normal(size=(1, 4, 8)).astype(np.float32)
    info = convert_fp16(_graph(tmp_path), tmp_path / "half.onnx", [x])
    assert info["checked"] and info["fp32_ops"] == []
    assert {"Softmax", "LayerNormalization"} <= _fp16_ops(tmp_path / "half.onnx")
    scores = _run(tmp_path / "half.onnx", x)[0]
    drift = np.abs(scores - _softmax(x.astype(np.float64))).max()
    assert drift < 0.02 and info["max_abs_diff_scores"] < 0.02  # within the score tolerance


def test_overflow_keeps_layernorm_and_softmax_in_fp32(tmp_path, device_like_check):
    """Inputs beyond fp16's range: the plain rewrite gives inf/NaN, the fallback is exact."""
    x = np.random.default_rng(1).normal(size=(1, 4, 8)).astype(np.float32)
    x[0, :, 0] = 1.5 * FP16_MAX
    assert not all(np.isfinite(o).all() for o in _run_plain(tmp_path, x))  # the premise
    info = convert_fp16(_graph(tmp_path), tmp_path / "half.onnx", [x])
    assert info["checked"] and info["fp32_ops"] == list(SENSITIVE_OPS)
    assert not _fp16_ops(tmp_path / "half.onnx") & set(SENSITIVE_OPS)
    scores, segments = _run(tmp_path / "half.onnx", x)
    np.testing.assert_allclose(scores, _softmax(x.astype(np.float64)), atol=1e-6)
    assert np.isfinite(segments).all() and info["max_abs_diff_scores"] <= 1e-6


def _run_plain(tmp_path, x):
    """Outputs of the rewrite without the fallback (what the first try produces)."""
    return fp16._outputs(fp16._rewrite(onnx.load(str(_graph(tmp_path))), ()), [x])[0]


def test_still_inaccurate_with_the_fallback_is_refused(tmp_path):
    """Both rewrites drift beyond the tolerance: an error, and no file is written."""
    x = np.random.default_rng(2).normal(size=(1, 4, 8)).astype(np.float32)
    with pytest.raises(PbdError, match="fp16 rewrite stays inaccurate"):
        convert_fp16(_graph(tmp_path), tmp_path / "half.onnx", [x], score_tolerance=1e-12)
    assert not (tmp_path / "half.onnx").exists()


def test_unchecked_where_onnxruntime_cannot_run_fp16(tmp_path, monkeypatch):
    calls = []
    real = fp16._outputs

    def outputs(model, inputs):  # the fp32 reference runs; the fp16 model has no kernels
        calls.append(model)
        if len(calls) > 1:
            raise RuntimeError("NOT_IMPLEMENTED: Could not find an implementation for Softmax(13)")
        return real(model, inputs)

    monkeypatch.setattr(fp16, "_outputs", outputs)
    x = np.zeros((1, 4, 8), np.float32)
    info = convert_fp16(_graph(tmp_path), tmp_path / "half.onnx", [x])
    assert info["checked"] is False and "NOT_IMPLEMENTED" in info["reason"]
    assert info["fp32_ops"] == list(SENSITIVE_OPS)  # the conservative rewrite is shipped
    assert not _fp16_ops(tmp_path / "half.onnx") & set(SENSITIVE_OPS)
