"""ONNX Runtime's TensorRT provider gets its engine and timing caches (and fp16 when asked)."""

import onnxruntime as ort
import pytest

from pbd_deploy.errors import PbdError
from pbd_deploy.runtime.ort_backend import OrtBackend


@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_provider_options(tmp_path, monkeypatch, fp16):
    seen = {}

    class Session:
        def __init__(self, path, options, providers):
            seen["providers"] = providers
            raise RuntimeError("stop here")  # the options are what this test checks

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])  # fmt: skip
    with pytest.raises(PbdError, match="stop here"):
        OrtBackend(tmp_path / "model.onnx", trt_fp16=fp16)
    (name, options), cpu = seen["providers"]
    assert name == "TensorrtExecutionProvider" and cpu == "CPUExecutionProvider"
    cache = str(tmp_path / "pbd-deploy" / "ort-tensorrt")
    assert options == {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
        "trt_fp16_enable": fp16,
    }
