"""An engine and its metadata are written so that a crash can never pair them wrongly."""

import json
import shutil
import sys

import pytest

from pbd_deploy.core import atomic
from pbd_deploy.errors import PbdError
from pbd_deploy.export.config import EngineConfig
from pbd_deploy.export.tensorrt import build_engine
from pbd_deploy.runtime import Detector
from pbd_deploy.runtime.engine_meta import ENGINE_SHA256, DeviceInfo, metadata_path
from tests.export.fake_trt import fake_trt
from tests.export.helpers import deployed

H100 = DeviceInfo("10.3.0", "NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture(scope="module")
def deploy(tmp_path_factory, synth_data):
    return deployed(tmp_path_factory, synth_data)


@pytest.fixture
def built(deploy, tmp_path, monkeypatch):
    out = tmp_path / "deploy"
    shutil.copytree(deploy, out)
    trt = fake_trt("10.3.0")
    config = EngineConfig(
        min_shape=(1, 32), opt_shape=(1, 32), max_shape=(1, 32), timing_cache=str(out / "t.cache")
    )
    build_engine(out / "model.onnx", out / "model.engine", config, trt, H100)
    import pbd_deploy.runtime.trt_backend as backend

    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    here = type("Cuda", (), {"device": lambda self: (H100.device_name, (9, 0))})
    monkeypatch.setattr(backend, "open_cuda", here)
    return out, trt, config


def test_metadata_names_the_engine_it_describes(built):
    out, _, _ = built
    engine = out / "model.engine"
    meta = json.loads(metadata_path(engine).read_text())
    atomic.check_checksum(engine.read_bytes(), meta, engine, ENGINE_SHA256)
    engine.write_bytes(engine.read_bytes() + b" rebuilt")  # a new engine, the old metadata
    with pytest.raises(PbdError, match="does not match its metadata"):
        Detector(engine)


def test_crash_between_engine_and_metadata_is_refused(built, monkeypatch):
    out, trt, config = built
    real = atomic.write_file

    def killed_before_metadata(path, data, executable=False, what=""):
        if str(path).endswith(".engine.json"):
            raise KeyboardInterrupt  # as a kill would stop it
        return real(path, data, executable, what)

    monkeypatch.setattr(atomic, "write_file", killed_before_metadata)
    with pytest.raises(KeyboardInterrupt):
        build_engine(out / "model.onnx", out / "model.engine", config, trt, H100)
    assert not metadata_path(out / "model.engine").exists()
    with pytest.raises(PbdError, match="is missing: an engine needs the metadata"):
        Detector(out / "model.engine")
