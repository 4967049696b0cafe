"""TensorRT: version gating, typing, DLA, timing cache, engine metadata, the trtexec script.

What runs here uses the stand-ins of tests/export/fake_trt.py (enum values and return types
from TensorRT's headers); the tests marked `trt` build and run a real engine wherever
TensorRT and a GPU are present.
"""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pbd_deploy.errors import PbdError
from pbd_deploy.export.config import EngineConfig, ExportConfig
from pbd_deploy.export.tensorrt import (
    build_engine,
    default_engine_config,
    timing_cache_path,
    trt_major,
    trtexec_command,
)
from pbd_deploy.export.trt_script import build_script
from pbd_deploy.runtime import Detector
from pbd_deploy.runtime.engine_meta import DeviceInfo, check_engine_fits, metadata_path
from tests.export.fake_trt import Cuda, fake_trt
from tests.export.helpers import deployed

H100 = DeviceInfo("10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), 132)
STATIC = dict(min_shape=(1, 32), opt_shape=(1, 32), max_shape=(1, 32))


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


def _build(export_dir, version, name, tmp_path=None, device=H100, **config):
    trt = fake_trt(version)
    config.setdefault("timing_cache", str(export_dir.parent / "t.cache"))
    cfg = EngineConfig(**{**STATIC, **config})
    meta = build_engine(export_dir / name, export_dir / "model.engine", cfg, trt, device)
    return trt, meta, json.loads((export_dir / "model.engine").read_bytes())


def test_version_gate():
    assert trt_major("10.3.0") == 10 and trt_major("11.0.0.9") == 11
    with pytest.raises(PbdError, match="too old"):
        trt_major("8.6.1")


def test_stand_in_follows_the_tensorrt_headers():
    # include/NvInfer.h of v10.3.0 and v11.0 (see fake_trt.py): flag values and bool returns
    v10, v11 = fake_trt("10.3.0"), fake_trt("11.0.0")
    assert int(v10.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) == 0
    assert int(v10.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert int(v11.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert (int(v10.BuilderFlag.FP16), int(v10.BuilderFlag.INT8)) == (0, 1)
    assert int(v10.BuilderFlag.GPU_FALLBACK) == int(v11.BuilderFlag.GPU_FALLBACK) == 3
    assert not hasattr(v11.BuilderFlag, "FP16") and not hasattr(v11.BuilderFlag, "INT8")
    assert (int(v10.DeviceType.GPU), int(v10.DeviceType.DLA)) == (0, 1)
    assert int(v10.MemoryPoolType.WORKSPACE) == 0
    assert [int(v10.TensorIOMode.INPUT), int(v10.TensorIOMode.OUTPUT)] == [1, 2]
    assert int(v10.ProfilingVerbosity.DETAILED) == 2 and int(v10.LayerInformationFormat.JSON) == 1
    config = v10.Builder(None).create_builder_config()
    own = config.create_timing_cache(b"")
    assert config.set_timing_cache(own, ignore_mismatch=False) is True
    foreign = config.create_timing_cache(fake_trt("10.4.0").Builder(None).create_builder_config()
                                         .create_timing_cache(b"").serialize())  # fmt: skip
    assert config.set_timing_cache(foreign, ignore_mismatch=False) is False


@pytest.mark.parametrize("version, bit", [("10.3.0", 2), ("11.0.0", 1)])
@pytest.mark.parametrize(
    "name, precision", [("model.fp16.onnx", "fp16"), ("model.int8.onnx", "int8")]
)
def test_typed_files_build_strongly_typed(export_dir, version, bit, name, precision):
    # 1 << STRONGLY_TYPED: 1 << 1 on 10.x, 1 << 0 on 11.x; no precision flags with it
    _, meta, record = _build(export_dir, version, name, precision=precision)
    assert record["network_flags"] == bit and record["flags"] == []
    assert meta["strongly_typed"] is True and meta["builder_flags"] == []
    assert meta["precision"] == precision and meta["onnx"] == name
    assert meta["onnx_sha256"] == _manifest(export_dir)["files"][name]["sha256"]


def test_fp16_flag_only_for_the_fp32_file_on_10(export_dir):
    _, meta, record = _build(export_dir, "10.3.0", "model.onnx", precision="fp16")
    assert record["network_flags"] == 0 and record["flags"] == ["FP16"]
    assert meta["strongly_typed"] is False
    with pytest.raises(PbdError, match="strongly typed networks: a fp16 engine needs the fp16"):
        _build(export_dir, "11.0.0", "model.onnx", precision="fp16")
    with pytest.raises(PbdError, match="model.int8.onnx"):  # no INT8 without Q/DQ scales
        _build(export_dir, "10.3.0", "model.onnx", precision="int8")
    with pytest.raises(PbdError, match="model.fp16.onnx is typed fp16"):
        _build(export_dir, "10.3.0", "model.fp16.onnx", precision="fp32")


def test_dla_is_fp16_only_and_its_layers_are_counted(export_dir):
    for name, precision in (("model.onnx", "fp32"), ("model.int8.onnx", "int8")):
        with pytest.raises(PbdError, match="--dla-core builds fp16 engines only"):
            _build(export_dir, "10.3.0", name, precision=precision, dla_core=0)
    trt, meta, record = _build(
        export_dir, "10.3.0", "model.fp16.onnx", precision="fp16", dla_core=1
    )
    # DLA on 10.x: weakly typed with FP16 (as trtexec --fp16 --useDLACore), GPU fallback
    assert record["flags"] == ["FP16", "GPU_FALLBACK"] and record["dla"] == 1
    assert record["network_flags"] == 0 and record["profiling_verbosity"] == "DETAILED"
    assert (meta["dla_layers"], meta["gpu_layers"]) == (1, 1)  # from the engine inspector
    with pytest.raises(PbdError, match="has no DLA"):
        _build(export_dir, "11.1.0", "model.fp16.onnx", precision="fp16", dla_core=0)
    with pytest.raises(PbdError, match="pass --fp16 and not --int8"):
        ExportConfig(dla_core=0)
    with pytest.raises(PbdError, match="pass --fp16 and not --int8"):
        ExportConfig(dla_core=0, fp16=True, int8=True, calib="data")


def test_timing_cache_is_checked_and_named_by_version_and_device(export_dir, tmp_path, caplog):
    cache = tmp_path / "timing.cache"
    trt, meta, _ = _build(export_dir, "10.3.0", "model.onnx", timing_cache=str(cache))
    assert trt.calls["set_cache"] == [True] and meta["timing_cache"]["reused"] is False
    first = cache.read_bytes()
    trt, meta, _ = _build(export_dir, "10.3.0", "model.onnx", timing_cache=str(cache))
    assert trt.calls["cache_in"] == first and meta["timing_cache"]["reused"] is True
    # a cache of another TensorRT version is refused: the build starts an empty one
    with caplog.at_level(logging.WARNING):
        trt, meta, _ = _build(export_dir, "10.4.0", "model.onnx", timing_cache=str(cache))
    assert trt.calls["set_cache"] == [False, True] and meta["timing_cache"]["reused"] is False
    assert "refused" in caplog.text
    assert cache.read_bytes().startswith(b"trt10.4.0|")
    os.environ["XDG_CACHE_HOME"], old = str(tmp_path / "xdg"), os.environ.get("XDG_CACHE_HOME")
    try:
        path = timing_cache_path(H100)
        assert path == tmp_path / "xdg" / "pbd-deploy" / "timing-trt10.3.0-sm90.cache"
        _, meta, _ = _build(export_dir, "10.3.0", "model.onnx", timing_cache=None)
        assert meta["timing_cache"]["file"] == str(path) and path.is_file()
    finally:
        os.environ.pop("XDG_CACHE_HOME") if old is None else os.environ.update(XDG_CACHE_HOME=old)
    assert not (export_dir / "timing.cache").exists()


def test_dynamic_profile(export_dir):
    manifest = _manifest(export_dir)
    manifest["input"]["shape"] = ["batch", 3, "time", 32, 32]  # as a --dynamic export
    config = default_engine_config(manifest, "int8", 2.0, dla_core=None)
    assert (config.min_shape, config.opt_shape, config.max_shape) == ((1, 16), (1, 32), (2, 64))
    (export_dir / "model.json").write_text(json.dumps(manifest))
    config.timing_cache = str(export_dir.parent / "t.cache")
    trt = fake_trt("10.3.0")
    build_engine(export_dir / "model.int8.onnx", export_dir / "e.engine", config, trt, H100)
    record = json.loads((export_dir / "e.engine").read_bytes())
    assert record["pool"] == {"WORKSPACE": 2 * 2**30}
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
    config = EngineConfig(precision="fp16", workspace_gib=2, **STATIC)
    base = ["trtexec", "--onnx=model.fp16.onnx", "--saveEngine=e", "--skipInference",
            "--memPoolSize=workspace:2048", "--timingCacheFile=t.cache"]  # fmt: skip
    assert trtexec_command("model.fp16.onnx", "e", manifest, config, 10, "t.cache") == [
        *base,
        "--stronglyTyped",
    ]
    assert trtexec_command("model.fp16.onnx", "e", manifest, config, 11, "t.cache") == base
    v10 = trtexec_command("model.onnx", "e", manifest, config, 10)
    assert v10[-1] == "--fp16" and "--stronglyTyped" not in v10
    manifest["input"]["shape"] = ["batch", 3, "time", 32, 32]
    dyn = EngineConfig(
        precision="fp16", min_shape=(1, 16), opt_shape=(2, 32), max_shape=(4, 64), dla_core=0
    )
    cmd = trtexec_command("model.fp16.onnx", "e", manifest, dyn, 10)
    assert cmd[4:7] == [
        "--minShapes=frames:1x3x16x32x32",
        "--optShapes=frames:2x3x32x32x32",
        "--maxShapes=frames:4x3x64x32x32",
    ]
    assert cmd[-3:] == ["--fp16", "--useDLACore=0", "--allowGPUFallback"]
    int8 = trtexec_command("model.int8.onnx", "e", manifest, EngineConfig(precision="int8"), 10)
    assert "--int8" not in int8 and "--stronglyTyped" in int8  # explicit Q/DQ, strongly typed


def test_engine_metadata_check():
    meta = {"trt_version": "10.3.0", "device_name": H100.device_name, "compute_capability": [9, 0],
            "sm_count": 132}  # fmt: skip
    check_engine_fits(meta, H100, "m.engine")
    orin = DeviceInfo("10.3.0", "Orin", (8, 7), 16)
    with pytest.raises(
        PbdError,
        match=r"built for NVIDIA H100 80GB HBM3 sm 9.0 \(this machine has "
        r"Orin sm 8.7\); rebuild",
    ):
        check_engine_fits(meta, orin, "m.engine")
    with pytest.raises(PbdError, match=r"TensorRT 10.3.0 \(this machine has 11.0.0\)"):
        check_engine_fits(meta, DeviceInfo("11.0.0", H100.device_name, (9, 0), 132), "m.engine")
    # same name and sm_87, other module (AGX Orin 16 SMs, Orin NX 8): refused by SM count
    agx = {**meta, "device_name": "Orin", "compute_capability": [8, 7], "sm_count": 16}
    with pytest.raises(PbdError, match="with 16 SMs \\(this one has 8\\)"):
        check_engine_fits(agx, DeviceInfo("10.3.0", "Orin", (8, 7), 8), "m.engine")


def _fake_runtime(monkeypatch, trt, cuda):
    import pbd_deploy.runtime.trt_backend as backend

    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(backend, "open_cuda", lambda: cuda)


def test_engine_is_bound_to_its_metadata(export_dir, monkeypatch):
    trt, meta, _ = _build(export_dir, "10.3.0", "model.onnx")
    engine = export_dir / "model.engine"
    assert meta["engine_sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert meta["sm_count"] == 132
    _fake_runtime(monkeypatch, trt, Cuda())
    Detector(engine)  # accepted
    engine.write_bytes(engine.read_bytes() + b" ")  # another engine copied over
    with pytest.raises(PbdError, match="does not match its metadata"):
        Detector(engine)
    legacy = {k: v for k, v in meta.items() if k != "engine_sha256"}
    metadata_path(engine).write_text(json.dumps(legacy))
    with pytest.raises(PbdError, match="does not record the engine's sha256"):
        Detector(engine)


def test_runtime_refuses_an_engine_from_another_device(export_dir, monkeypatch):
    trt, _, _ = _build(export_dir, "10.3.0", "model.onnx")
    _fake_runtime(monkeypatch, trt, Cuda(device=("Orin", (8, 7)), sm_count=16))
    with pytest.raises(PbdError, match="built for NVIDIA H100.*this machine has Orin"):
        Detector(export_dir / "model.engine")
    _fake_runtime(monkeypatch, trt, Cuda(sm_count=114))  # same name and sm, fewer SMs
    with pytest.raises(PbdError, match="132 SMs"):
        Detector(export_dir / "model.engine")


def test_runtime_refuses_an_engine_of_another_model(export_dir):
    (export_dir / "model.engine").write_bytes(b"engine")
    meta = {"trt_version": "10.3.0", "onnx_sha256": "0" * 64}
    metadata_path(export_dir / "model.engine").write_text(json.dumps(meta))
    with pytest.raises(PbdError, match="was not built from an ONNX file of"):
        Detector(export_dir / "model.engine")


STUB_TRTEXEC = """\
#!/bin/sh
# trtexec stand-in: the banner and device report of samples/trtexec (TensorRT 10.3.0), and
# --saveEngine gets the prebuilt engine.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] [b26] # trtexec $*"
[ "$1" = "--help" ] && exit 0
echo "$*" > "{log}"
for a in "$@"; do case "$a" in --saveEngine=*) cp "{engine}" "${{a#--saveEngine=}}";; esac; done
echo "[11/30/2026-13:00:00] [I] Selected Device: NVIDIA H100 80GB HBM3"
echo "[11/30/2026-13:00:00] [I] Selected Device ID: 0"
echo "[11/30/2026-13:00:00] [I] Compute Capability: 9.0"
echo "[11/30/2026-13:00:00] [I] SMs: 132"
echo "[11/30/2026-13:00:00] [I] TensorRT version: 10.3.0"
echo "&&&& PASSED TensorRT.trtexec [TensorRT v100300] [b26] # trtexec $*"
"""


def test_build_script_with_trtexec_writes_metadata_the_runtime_accepts(
    export_dir, tmp_path, monkeypatch
):
    manifest = _manifest(export_dir)
    config = default_engine_config(manifest, "fp16", 4.0, None)
    script = build_script("model.fp16.onnx", manifest, config)
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    (export_dir / "build_engine.sh").write_text(script)
    # the "engine" trtexec will write: one the stand-in TensorRT can load
    trt, _, _ = _build(export_dir, "10.3.0", "model.fp16.onnx", precision="fp16")
    prebuilt = tmp_path / "prebuilt.engine"
    shutil.move(export_dir / "model.engine", prebuilt)
    metadata_path(export_dir / "model.engine").unlink()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "trtexec"
    stub.write_text(STUB_TRTEXEC.format(log=tmp_path / "args", engine=prebuilt))
    stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}  # no pbd-deploy on PATH
    run = subprocess.run(["sh", str(export_dir / "build_engine.sh")], env=env, text=True,
                         capture_output=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    args = (tmp_path / "args").read_text().split()
    assert "--skipInference" in args and "--stronglyTyped" in args and "--fp16" not in args
    assert any(a.startswith("--timingCacheFile=" + str(tmp_path / ".cache")) for a in args)
    engine = export_dir / "model.engine"
    meta = json.loads(metadata_path(engine).read_text())
    assert meta["engine_sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert (meta["sm_count"], meta["compute_capability"], meta["precision"]) == (
        132,
        [9, 0],
        "fp16",
    )
    assert meta["onnx_sha256"] == manifest["files"]["model.fp16.onnx"]["sha256"]
    _fake_runtime(monkeypatch, trt, Cuda())
    detector = Detector(engine)  # the runtime accepts what the script wrote
    assert detector.backend.metadata == meta
    assert not list(export_dir.glob(".model.engine*"))  # no temporaries left


def test_build_script_prefers_pbd_deploy_build_engine(export_dir, tmp_path):
    manifest = _manifest(export_dir)
    config = default_engine_config(manifest, "int8", 2.0, None)
    (export_dir / "build_engine.sh").write_text(build_script("model.int8.onnx", manifest, config))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # the interpreter of pbd-deploy's shebang: it imports tensorrt (`-c`), else runs the file
    python = bin_dir / "python-with-tensorrt"
    python.write_text('#!/bin/sh\nif [ "$1" = "-c" ]; then exit 0; fi\nexec /bin/sh "$@"\n')
    cli = bin_dir / "pbd-deploy"
    cli.write_text(f'#!{python}\necho "$@" > {tmp_path / "cli-args"}\n')
    for f in (python, cli):
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(["sh", str(export_dir / "build_engine.sh")], env=env, text=True,
                         capture_output=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cli-args").read_text().split() == [
        "build-engine", "model.int8.onnx", "--precision", "int8", "--workspace", "2.0"
    ]  # fmt: skip


def test_export_with_tensorrt_but_no_gpu_falls_back_to_the_script(tmp_path, monkeypatch, caplog):
    from types import SimpleNamespace

    import pbd_deploy.runtime.cuda as cuda
    from pbd_deploy.export import pipeline

    def no_gpu():
        raise PbdError("CUDA call failed: cudaErrorNoDevice")

    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt("10.3.0"))
    monkeypatch.setattr(cuda, "open_cuda", no_gpu)
    manifest = {"batch": 1, "window": 32, "input": {"name": "frames", "shape": [1, 3, 32, 32, 32]},
                "files": {"model.onnx": {"sha256": "0" * 64, "precision": "fp32"}}}  # fmt: skip
    job = SimpleNamespace(config=ExportConfig(trt=True), manifest=manifest, out=tmp_path)
    with caplog.at_level(logging.WARNING):
        result = pipeline._engine(job)
    assert result["built"] is False and "no CUDA GPU" in result["reason"]
    assert "cudaErrorNoDevice" in result["reason"] and (tmp_path / "build_engine.sh").is_file()
    assert len(caplog.records) == 1 and "build_engine.sh" in caplog.records[0].getMessage()


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
    assert meta["precision"] == "fp32" and meta["profiles"] and meta["sm_count"] > 0
    edited = dict(meta, device_name="Another GPU")
    metadata_path(export_dir / "model.engine").write_text(json.dumps(edited))
    with pytest.raises(PbdError, match="Another GPU"):
        Detector(export_dir / "model.engine")


@pytest.mark.trt
@pytest.mark.parametrize(
    "name, precision", [("model.fp16.onnx", "fp16"), ("model.int8.onnx", "int8")]
)
def test_real_typed_engines_build(export_dir, name, precision):
    from pbd_deploy.export.tensorrt import build_engine_file

    meta = build_engine_file(export_dir / name, export_dir / f"{precision}.engine")
    assert meta["strongly_typed"] and meta["precision"] == precision
    scores, _ = Detector(export_dir / f"{precision}.engine").predict(
        np.zeros((1, 3, 32, 32, 32), np.float32)
    )
    assert np.isfinite(scores).all()
