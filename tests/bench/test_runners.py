"""bench times models through the runtime's own backends, with the options Detector uses."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from pbd_deploy.bench import runners
from pbd_deploy.bench.config import BenchConfig
from pbd_deploy.bench.run import run_bench
from pbd_deploy.bench.sources import load_source
from pbd_deploy.errors import PbdError
from pbd_deploy.runtime import Detector
from pbd_deploy.runtime.ort_backend import OrtBackend

FAST = dict(warmup=1, iters=2, threads=1)


@pytest.fixture(scope="module")
def export_dir(model_dirs, tmp_path_factory):
    from pbd_deploy.export.config import ExportConfig
    from pbd_deploy.export.pipeline import export_model

    out = tmp_path_factory.mktemp("bench_export") / "deploy"
    export_model(model_dirs[0], out, ExportConfig())
    return out


def _options(backend: OrtBackend) -> dict:
    options = backend.session.get_session_options()
    return {
        "intra_op_num_threads": options.intra_op_num_threads,
        "inter_op_num_threads": options.inter_op_num_threads,
        "execution_mode": options.execution_mode,
        "graph_optimization_level": options.graph_optimization_level,
        "allow_spinning": options.get_session_config_entry("session.intra_op.allow_spinning"),
    }


def test_ort_rows_run_the_detectors_session(export_dir, tmp_path, monkeypatch):
    opened = []

    class Spy(OrtBackend):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(runners, "OrtBackend", Spy)
    config = BenchConfig(backends=["ort"], **FAST)
    source = load_source(export_dir / "model.onnx", config)
    runner = runners.make_runner(source, "ort", config, tmp_path)
    (backend,) = opened
    detector = Detector(export_dir, threads=1)
    # The same session options as the runtime's (idle threads do not spin, one thread here) ...
    assert _options(backend) == _options(detector.backend)
    assert _options(backend)["allow_spinning"] == "0"
    assert runner.info["threads"] == 1 and runner.info["providers"] == ["CPUExecutionProvider"]
    # ... and the call is the runtime's: its outputs are Detector.predict's for the same input.
    x = runners._frames(source.shape)
    scores, segments = runner.call()
    want_scores, want_segments = detector.predict(x)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(segments, want_segments, rtol=0, atol=1e-5)


class FakeTrtBackend:
    """What bench uses of TrtBackend: input_shape (-1 dynamic), metadata profiles, run."""

    calls: list = []

    def __init__(self, path):
        self.path = path
        dynamic = "dyn" in path.name
        self.input_shape = [-1, 3, -1, 32, 32] if dynamic else [1, 3, 32, 32, 32]
        opt = [2, 3, 64, 32, 32] if dynamic else self.input_shape
        self.metadata = {"profiles": [{"input": "frames", "opt": opt}]}
        self.providers = ["TensorRT 10.3.0"]

    def run(self, x):
        FakeTrtBackend.calls.append(x.shape)
        return np.zeros((len(x), 4, 3), np.float32), np.zeros((len(x), 4, 2), np.float32)


@pytest.mark.parametrize(
    "name, options, shape",
    [
        ("model.engine", {}, (1, 3, 32, 32, 32)),
        ("dyn.engine", {}, (1, 3, 64, 32, 32)),  # the profile's optimum window, --batch 1
        ("dyn.engine", {"window": 48, "batch": 2}, (2, 3, 48, 32, 32)),
    ],
)
def test_trt_rows_call_the_runtime_backend(tmp_path, monkeypatch, name, options, shape):
    monkeypatch.setattr(runners, "TrtBackend", FakeTrtBackend)
    FakeTrtBackend.calls = []
    engine = tmp_path / name
    engine.write_bytes(b"plan")
    config = BenchConfig(backends=["trt"], device="cuda", power=False, **FAST, **options)
    (row,) = run_bench([engine], config)["rows"]
    assert row["input"] == list(shape) and row["timer"] == "perf_counter"
    assert row["runner"]["scope"] == runners.HOST_TO_HOST
    # warm-up, timed iterations and the memory pass all ran the backend on that shape
    assert FakeTrtBackend.calls == [shape] * (config.warmup + config.iters + 1)


def test_trt_backend_only_runs_engines(model_dirs, tmp_path):
    config = BenchConfig(backends=["trt"], device="cuda", **FAST)
    source = load_source(model_dirs[0], config)
    with pytest.raises(PbdError, match="trt backend runs .engine files"):
        runners.make_runner(source, "trt", config, tmp_path)


def test_ort_on_cuda_needs_a_gpu_provider(monkeypatch):
    fake = SimpleNamespace(get_available_providers=lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(runners, "require", lambda module, extra: fake)
    with pytest.raises(PbdError, match=r"pbd-deploy\[gpu\]"):
        runners.ort_providers("cuda")
    fake.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runners.ort_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_onnx_benchmarks_without_torch(export_dir):
    """The deploy install (no torch) benchmarks exported files; MACs are then unknown."""
    code = (
        "import sys, json\n"
        "for name in ('torch', 'peft', 'onnx', 'onnxslim', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"
        "from pbd_deploy.bench.config import BenchConfig\n"
        "from pbd_deploy.bench.run import run_bench\n"
        "config = BenchConfig(backends=['ort'], warmup=1, iters=2, threads=1)\n"
        f"(row,) = run_bench([{str(export_dir / 'model.onnx')!r}], config)['rows']\n"
        "print(json.dumps([row['input'], row['macs'], row['runner']['threads']]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[1, 3, 32, 32, 32], None, 1]
