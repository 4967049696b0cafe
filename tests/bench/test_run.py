"""run_bench end to end on tiny model directories and an exported .onnx file."""

import copy
import json

import pytest

from pbd_deploy.bench.config import BenchConfig
from pbd_deploy.bench.run import run_bench
from pbd_deploy.errors import PbdError
from pbd_deploy.models.complexity import count_macs, count_params
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import load_model, save_model
from tests.conftest import tiny_config

FAST = dict(warmup=1, iters=3, threads=1)


@pytest.fixture(scope="module")
def side_by_side(model_dirs):
    base, small = model_dirs
    return run_bench([base, small], BenchConfig(backends=["torch", "ort"], **FAST))


def test_torch_and_ort_side_by_side(model_dirs, side_by_side):
    base, small = model_dirs
    rows = side_by_side["rows"]
    assert [(r["backend"], r["model"]) for r in rows] == [
        ("torch", "base"), ("torch", "small"), ("ort", "base"), ("ort", "small")
    ]  # fmt: skip
    for row, path in zip(rows, [base, small] * 2):
        model = load_model(path)
        assert row["macs"] == count_macs(model.config)["total"]
        assert row["params"] == count_params(model)
        assert row["input"] == [1, 3, 32, 32, 32]
        lat = row["latency"]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["iters"] == 3
        assert row["windows_per_s"] == pytest.approx(1e3 / lat["mean_ms"])
        # 32 frames at the model's 10 fps are 3.2 s of video per window.
        assert row["video_s_per_s"] == pytest.approx(row["windows_per_s"] * 3.2)
        assert row["memory"]["peak_mb"] > 0
    assert rows[2]["runner"]["threads"] == 1
    json.dumps(side_by_side)  # JSON-ready


def test_speedup_ideal_and_efficiency_against_the_first_model(side_by_side, model_dirs):
    from pbd_deploy.compress.blocks import block_macs

    base = load_model(model_dirs[0]).config
    total = count_macs(base)["total"]
    # One of four blocks dropped (block 3): the ideal speedup by the per-block MAC counter.
    ideal = total / (total - block_macs(base)[3])
    for backend in ("torch", "ort"):
        b, s = [r for r in side_by_side["rows"] if r["backend"] == backend]
        assert b["speedup"] == 1 and b["efficiency"] == 1  # the first model is the reference
        assert s["ideal_speedup"] == pytest.approx(ideal, rel=1e-12)
        assert 4 / 3 > s["ideal_speedup"] > 1  # the head remains


def test_onnx_files_give_their_own_input_shape(model_dirs, tmp_path):
    from pbd_deploy.export.onnx import export_onnx

    model = load_model(model_dirs[0])
    (tmp_path / "static").mkdir()
    static = export_onnx(model, tmp_path / "static" / "model.onnx")
    (row,) = run_bench([static], BenchConfig(backends=["ort"], **FAST))["rows"]
    assert row["input"] == [1, 3, 32, 32, 32] and row["model"] == "static/model.onnx"
    dynamic = export_onnx(model, tmp_path / "dyn.onnx", dynamic=True)
    config = BenchConfig(backends=["ort"], window=48, batch=2, **FAST)
    (row,) = run_bench([dynamic], config)["rows"]
    assert row["input"] == [2, 3, 48, 32, 32]
    with pytest.raises(PbdError, match="dynamic input dimension 2.*--window"):
        run_bench([dynamic], BenchConfig(backends=["ort"], **FAST))
    with pytest.raises(PbdError, match="built for batch 1, not --batch 2"):
        run_bench([static], config)


def test_window_override_of_a_model_directory(model_dirs):
    (row,) = run_bench([model_dirs[0]], BenchConfig(window=48, **FAST))["rows"]
    assert row["input"] == [1, 3, 48, 32, 32]
    cfg = copy.deepcopy(load_model(model_dirs[0]).config)
    cfg.input.window = 48
    assert row["macs"] == count_macs(cfg)["total"]


def test_models_with_different_inputs_are_refused(model_dirs, tmp_path):
    base, _ = model_dirs
    other = save_model(Detector(tiny_config(window=64)), tmp_path / "w64")
    with pytest.raises(PbdError, match="take different inputs"):
        run_bench([base, other], BenchConfig(**FAST))


def test_unavailable_backends_name_what_to_install(model_dirs, tmp_path):
    base, _ = model_dirs
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(PbdError, match=r"pbd-deploy\[trt\]|CUDA GPU"):
        run_bench([engine], BenchConfig(backends=["trt"], device="cuda", **FAST))
    with pytest.raises(PbdError, match=r"pbd-deploy\[gpu\]|CUDA"):
        run_bench([base], BenchConfig(backends=["ort"], device="cuda", **FAST))


def test_bad_sources(model_dirs, tmp_path):
    base, _ = model_dirs
    with pytest.raises(PbdError, match="does not exist"):
        run_bench([tmp_path / "missing"], BenchConfig(**FAST))
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(PbdError, match="not a model directory"):
        run_bench([text], BenchConfig(**FAST))
    onnx = tmp_path / "broken.onnx"
    onnx.write_bytes(b"garbage")
    with pytest.raises(PbdError, match="torch backend runs model directories"):
        run_bench([onnx], BenchConfig(**FAST))
    with pytest.raises(PbdError, match="onnxruntime cannot load"):
        run_bench([onnx], BenchConfig(backends=["ort"], **FAST))


@pytest.mark.gpu
def test_cuda_torch_uses_events_and_cuda_memory(model_dirs):
    base, small = model_dirs
    result = run_bench([base, small], BenchConfig(device="cuda", **FAST))
    for row in result["rows"]:
        assert row["timer"] == "cuda_events" and row["device"] == "cuda"
        assert row["memory"]["method"] == "torch.cuda.max_memory_allocated"
        assert row["memory"]["peak_mb"] > 0


@pytest.mark.trt
@pytest.mark.gpu
def test_trt_engine_beside_torch(model_dirs, tmp_path):
    from pbd_deploy.export.config import ExportConfig
    from pbd_deploy.export.pipeline import export_model
    from pbd_deploy.export.tensorrt import build_engine_file

    base, _ = model_dirs
    export_model(base, tmp_path / "deploy", ExportConfig())
    build_engine_file(tmp_path / "deploy" / "model.onnx")  # model.engine + its metadata
    engine = tmp_path / "deploy" / "model.engine"
    result = run_bench([engine], BenchConfig(backends=["trt"], device="cuda", **FAST))
    (row,) = result["rows"]
    assert row["timer"] == "perf_counter" and row["input"] == [1, 3, 32, 32, 32]
    assert row["runner"]["providers"][0].startswith("TensorRT")


def test_export_directory_gets_macs_from_its_model_json(model_dirs, tmp_path):
    """An .onnx from `pbd-deploy export` is compared with MACs like its model directory."""
    from pbd_deploy.export.config import ExportConfig
    from pbd_deploy.export.pipeline import export_model

    base, small = model_dirs
    export_model(small, tmp_path / "deploy", ExportConfig())
    config = BenchConfig(backends=["ort"], **FAST)
    dir_row, onnx_row = run_bench([base, tmp_path / "deploy" / "model.onnx"], config)["rows"]
    small_model = load_model(small)
    assert onnx_row["macs"] == count_macs(small_model.config)["total"]
    assert onnx_row["params"] == count_params(small_model)
    assert onnx_row["ideal_speedup"] == pytest.approx(dir_row["macs"] / onnx_row["macs"])
    assert onnx_row["video_s_per_s"] == pytest.approx(onnx_row["windows_per_s"] * 3.2)
