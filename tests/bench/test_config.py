import pytest

from pbd_deploy.bench.config import BenchConfig
from pbd_deploy.errors import PbdError


def test_json_round_trip():
    config = BenchConfig(backends=["torch", "ort"], window=64, threads=1, iters=5)
    assert BenchConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backends": ["tensorflow"]}, "unknown backend 'tensorflow'"),
        ({"backends": []}, "at least one backend"),
        ({"iters": 0}, "--iters must be at least 1"),
        ({"iters": -3}, "--iters must be at least 1"),
        ({"warmup": -1}, "--warmup"),
        ({"batch": 0}, "--batch"),
        ({"threads": 0}, "--threads"),
        ({"device": "tpu"}, "unknown device"),
        ({"backends": ["trt"]}, "--device cuda"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(PbdError, match=message):
        BenchConfig(**kwargs)


def test_unknown_fields_are_refused():
    with pytest.raises(PbdError, match="unknown option .iterations. for BenchConfig"):
        BenchConfig.from_dict({"iterations": 3})
