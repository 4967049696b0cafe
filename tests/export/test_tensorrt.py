"""TensorRT: version gating, the builder calls, engine metadata, and the trtexec command.

What runs here uses a recording stand-in for `tensorrt` (tests/export/fake_trt.py); the
tests marked `trt` build and run a real engine wherever TensorRT and a GPU are present.
"""

import json
import shutil
import subprocess

import numpy as np
import pytest

from pbd_deploy.errors import PbdError
from pbd_deploy.export.config import EngineConfig
from pbd_deploy.export.tensorrt import (
    build_engine,
    build_script,
    check_precision,
    default_engine_config,
    trt_major,
    trtexec_command,
)
from pbd_deploy.runtime import Detector
from pbd_deploy.runtime.engine_meta import DeviceInfo, check_engine_fits, metadata_path
from tests.export.fake_trt import fake_trt
from tests.export.helpers import deployed

H100 = DeviceInfo("10.3.0", "NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture(scope="module")
def deploy(tmp_path_factory, synth_data):
    return deployed(tmp_path_factory, synth_data)


@pytest.fixture
def export_dir(deploy, tmp_path):
    out = tmp_path / "deploy"
    shutil.copytree(deploy, out)
    return out


def _manifest(export_dir):
    return json.loads((export_dir / "model.json").read_text())


def test_version_gate():
    assert trt_major("10.3.0") == 10 and trt_major("11.0.0.9") == 11
    with pytest.raises(PbdError, match="too old"):
        trt_major("8.6.1")


def test_strongly_typed_precision_must_be_in_the_onnx():
    check_precision(EngineConfig(precision="fp16"), "fp32", 10)  # builder flag does it
    with pytest.raises(PbdError, match="model.fp16.onnx"):
        check_precision(EngineConfig(precision="fp16"), "fp32", 11)
    check_precision(EngineConfig(precision="int8"), "int8", 11)


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
def test_builder_calls(export_dir, version):
    trt = fake_trt(version)
    name = "model.fp16.onnx"
    config = EngineConfig(
        precision="fp16",
        workspace_gib=1.5,
        min_shape=(1, 32),
        opt_shape=(1, 32),
        max_shape=(1, 32),
        timing_cache=str(export_dir / "timing.cache"),
    )
    meta = build_engine(export_dir / name, export_dir / "model.engine", config, trt, H100)
    record = json.loads((export_dir / "model.engine").read_bytes())
    assert record["pool"] == {"workspace": int(1.5 * 2**30)}
    assert record["parsed"] == str(export_dir / name)
    if version.startswith("10"):
        assert record["flags"] == ["FP16"] and record["network_flags"] == 0
    else:  # strongly typed, no precision flags (TensorRT 11 removed them)
        assert record["flags"] == [] and record["network_flags"] == 1
    assert record["profiles"] == []  # a static graph needs none
    written = json.loads(metadata_path(export_dir / "model.engine").read_text())
    assert written == meta
    assert meta["device_name"] == H100.device_name and meta["compute_capability"] == [9, 0]
    assert meta["precision"] == "fp16" and meta["onnx"] == name
    assert meta["onnx_sha256"] == _manifest(export_dir)["files"][name]["sha256"]
    # The timing cache is written and the next build starts from it.
    first = (export_dir / "timing.cache").read_bytes()
    build_engine(export_dir / name, export_dir / "model.engine", config, trt, H100)
    assert trt.calls["cache_in"] == first


def test_dynamic_profile_and_dla(export_dir):
    trt = fake_trt("10.3.0")
    manifest = _manifest(export_dir)
    manifest["input"]["shape"] = ["batch", 3, "time", 32, 32]  # as a --dynamic export
    config = default_engine_config(manifest, "int8", 2.0, dla_core=1)
    assert (config.min_shape, config.opt_shape, config.max_shape) == ((1, 16), (1, 32), (2, 64))
    (export_dir / "model.json").write_text(json.dumps(manifest))
    config.timing_cache = str(export_dir / "t.cache")
    build_engine(export_dir / "model.int8.onnx", export_dir / "e.engine", config, trt, H100)
    record = json.loads((export_dir / "e.engine").read_bytes())
    assert record["flags"] == ["INT8", "GPU_FALLBACK"] and record["dla"] == 1
    assert record["profiles"] == [
        {
            "input": "frames",
            "min": [1, 3, 16, 32, 32],
            "opt": [1, 3, 32, 32, 32],
            "max": [2, 3, 64, 32, 32],
        }
    ]


def test_trtexec_command_flag_by_flag(deploy):
    manifest = json.loads((deploy / "model.json").read_text())
    config = EngineConfig(
        precision="fp16",
        workspace_gib=2,
        min_shape=(1, 32),
        opt_shape=(1, 32),
        max_shape=(1, 32),
        timing_cache="timing.cache",
    )
    v10 = trtexec_command("model.fp16.onnx", "model.engine", manifest, config, 10)
    assert v10 == [
        "trtexec",
        "--onnx=model.fp16.onnx",
        "--saveEngine=model.engine",
        "--memPoolSize=workspace:2048",
        "--timingCacheFile=timing.cache",
        "--fp16",
    ]
    v11 = trtexec_command("model.fp16.onnx", "model.engine", manifest, config, 11)
    assert v11 == v10[:-1]  # no --fp16 on 11.x: the ONNX is fp16 already
    manifest["input"]["shape"] = ["batch", 3, "time", 32, 32]
    dyn = EngineConfig(min_shape=(1, 16), opt_shape=(2, 32), max_shape=(4, 64), dla_core=0)
    cmd = trtexec_command("model.onnx", "model.engine", manifest, dyn, 10)
    assert cmd[3:6] == [
        "--minShapes=frames:1x3x16x32x32",
        "--optShapes=frames:2x3x32x32x32",
        "--maxShapes=frames:4x3x64x32x32",
    ]
    assert cmd[-2:] == ["--useDLACore=0", "--allowGPUFallback"]
    assert "--int8" in trtexec_command(
        "model.int8.onnx", "e", manifest, EngineConfig(precision="int8"), 10
    )


def test_build_script_is_valid_shell_with_both_commands(deploy):
    manifest = json.loads((deploy / "model.json").read_text())
    config = default_engine_config(manifest, "fp16", 4.0, None)
    script = build_script("model.fp16.onnx", manifest, config)
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    lines = [line.strip() for line in script.splitlines() if line.strip().startswith("trtexec")]
    assert len(lines) == 2 and lines[0].endswith("--timingCacheFile=timing.cache")
    assert lines[1].endswith("--fp16")  # the else branch: TensorRT 10
    written = (deploy / "build_engine.sh").read_text()
    # --fp16 --int8 export: the engine is built from the most reduced precision asked for
    assert written.count("trtexec --onnx=model.int8.onnx") == 2


def test_engine_metadata_check():
    meta = {"trt_version": "10.3.0", "device_name": H100.device_name, "compute_capability": [9, 0]}
    check_engine_fits(meta, H100, "m.engine")
    orin = DeviceInfo("10.3.0", "Orin", (8, 7))
    with pytest.raises(
        PbdError,
        match=r"built for NVIDIA H100 80GB HBM3 sm 9.0 \(this machine has "
        r"Orin sm 8.7\); rebuild",
    ):
        check_engine_fits(meta, orin, "m.engine")
    with pytest.raises(PbdError, match=r"TensorRT 10.3.0 \(this machine has 11.0.0\)"):
        check_engine_fits(meta, DeviceInfo("11.0.0", H100.device_name, (9, 0)), "m.engine")


def test_runtime_refuses_an_engine_from_another_device(export_dir, monkeypatch):
    trt = fake_trt("10.3.0")
    config = EngineConfig(
        min_shape=(1, 32),
        opt_shape=(1, 32),
        max_shape=(1, 32),
        timing_cache=str(export_dir / "t.cache"),
    )
    build_engine(export_dir / "model.onnx", export_dir / "model.engine", config, trt, H100)
    import pbd_deploy.runtime.trt_backend as backend

    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    orin = type("Cuda", (), {"device": lambda self: ("Orin", (8, 7)), "begin_capture": None})
    monkeypatch.setattr(backend, "open_cuda", orin)
    with pytest.raises(PbdError, match="built for NVIDIA H100.*this machine has Orin"):
        Detector(export_dir / "model.engine")


def test_runtime_refuses_an_engine_of_another_model(export_dir):
    (export_dir / "model.engine").write_bytes(b"engine")
    meta = {"trt_version": "10.3.0", "onnx_sha256": "0" * 64}
    metadata_path(export_dir / "model.engine").write_text(json.dumps(meta))
    with pytest.raises(PbdError, match="was not built from an ONNX file of"):
        Detector(export_dir / "model.engine")


@pytest.mark.trt
def test_real_engine_matches_onnx_runtime(export_dir):
    from pbd_deploy.export.tensorrt import build_engine_file

    meta = build_engine_file(export_dir / "model.onnx")
    engine = Detector(export_dir / "model.engine")
    onnx = Detector(export_dir / "model.onnx", providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32, 32)).astype(np.float32)
    for a, b in zip(engine.predict(x), onnx.predict(x)):
        assert np.abs(a - b).max() < 1e-3
    again = engine.predict(x)  # replayed through the CUDA graph
    np.testing.assert_array_equal(again[0], engine.predict(x)[0])
    assert meta["precision"] == "fp32" and meta["profiles"]
    edited = dict(meta, device_name="Another GPU")
    metadata_path(export_dir / "model.engine").write_text(json.dumps(edited))
    with pytest.raises(PbdError, match="Another GPU"):
        Detector(export_dir / "model.engine")
