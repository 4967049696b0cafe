"""The one config (de)serialisation helper: nested dataclasses, unknown keys named in one line."""

import json

import pytest

from pbd_deploy.bench.config import BenchConfig
from pbd_deploy.core.config import from_dict, to_dict
from pbd_deploy.core.postprocess import PostprocessConfig
from pbd_deploy.errors import PbdError
from pbd_deploy.export.config import EngineConfig, ExportConfig
from pbd_deploy.models.detector import DetectorConfig, InputConfig
from pbd_deploy.models.io import load_config
from tests.conftest import tiny_config


@pytest.mark.parametrize(
    "config",
    [
        tiny_config(),
        PostprocessConfig(nms_method="hard", max_detections=7),
        BenchConfig(backends=["torch", "ort"], window=48),
        ExportConfig(window=64, fp16=True),
        EngineConfig(precision="fp16", min_shape=(1, 32), opt_shape=(2, 64), max_shape=(4, 64)),
    ],
    ids=lambda c: type(c).__name__,
)
def test_json_round_trip(config):
    data = to_dict(config)
    assert json.loads(json.dumps(data)) == data  # JSON-shaped: tuples already lists
    assert from_dict(type(config), json.loads(json.dumps(data))) == config


def test_nested_dataclasses_are_rebuilt():
    data = json.loads(json.dumps(to_dict(tiny_config())))
    config = from_dict(DetectorConfig, data)
    assert isinstance(config.input, InputConfig) and config.input.window == 32
    assert type(config.backbone).__name__ == "BackboneConfig"
    assert config.input.mean == tiny_config().input.mean and isinstance(config.input.mean, tuple)


def test_optional_nested_dataclass_stays_none():
    config = tiny_config()
    data = to_dict(config)
    data["backbone"] = None
    data["input"].update(mode="features", feature_dim=16)
    rebuilt = from_dict(DetectorConfig, data)
    assert rebuilt.backbone is None and rebuilt.input.feature_dim == 16


def test_unknown_key_is_named_with_its_class_and_file(tmp_path):
    data = to_dict(tiny_config())
    data["input"]["windw"] = 64
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(PbdError) as err:
        load_config(tmp_path)
    message = str(err.value)
    assert "'windw'" in message and "InputConfig" in message
    assert str(tmp_path / "config.json") in message and "\n" not in message


def test_missing_required_fields_and_non_mappings():
    with pytest.raises(PbdError, match="DetectorConfig in here is missing 'name'"):
        from_dict(DetectorConfig, {"class_names": ["a"]}, "here")
    with pytest.raises(PbdError, match="must be a mapping of options, not list"):
        from_dict(BenchConfig, [1, 2])
    with pytest.raises(PbdError, match="InputConfig in x.json \\(input\\) must be a mapping"):
        from_dict(InputConfig, 3, "x.json (input)")


def test_each_configs_own_validation_still_runs():
    with pytest.raises(PbdError, match="--iters must be at least 1"):
        BenchConfig.from_dict({"iters": 0})
    with pytest.raises(PbdError, match="nms_method"):
        PostprocessConfig.from_dict({"nms_method": "fast"})
    with pytest.raises(PbdError, match="bad InputConfig"):
        from_dict(InputConfig, {"window": "long"})  # a TypeError inside __post_init__
