"""The TensorRT extras pin what the code needs (docs/tensorrt.md explains the choice)."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def _extras() -> dict[str, dict[str, Requirement]]:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return {k: {Requirement(r).name: Requirement(r) for r in v} for k, v in extras.items()}


def test_tensorrt_extras_pins():
    extras = _extras()
    for extra in ("trt", "trt-cuda-python"):
        spec = extras[extra]["tensorrt"].specifier
        # 10.3 (JetPack 6) and 11.x are the supported APIs; not 8.x/9.x, nor an unseen 12
        assert all(v in spec for v in ("10.3.0", "11.1.0")), extra
        assert not any(v in spec for v in ("9.3.0", "12.0.0")), extra
    cuda = extras["trt-cuda-python"]["cuda-python"].specifier
    # `cuda.bindings` (runtime/cuda.py) first shipped in cuda-python 12.6.1
    assert "12.6.1" in cuda and "12.6.0" not in cuda and "12.0.0" not in cuda
    assert "pycuda" in extras["trt"]
    # on a Jetson TensorRT comes from JetPack: that extra must not pull it from PyPI
    assert "tensorrt" not in extras["trt-jetson"] and "pycuda" in extras["trt-jetson"]
