"""A stand-in for the `tensorrt` module that records what the builder is asked to do.

It implements only the TensorRT 10/11 names `build_engine` may use; TensorRT 11's
BuilderFlag has no FP16/INT8 (removed there), so touching them on 11.x fails as it would.
The "engine" it serializes is the JSON of the recorded calls.
"""

from __future__ import annotations

import json
from enum import IntEnum
from types import SimpleNamespace


def fake_trt(version: str) -> SimpleNamespace:
    major = int(version.split(".")[0])
    calls: dict = {"flags": [], "profiles": [], "pool": {}}
    flags = ["GPU_FALLBACK"] + (["FP16", "INT8"] if major == 10 else [])
    BuilderFlag = IntEnum("BuilderFlag", flags)  # noqa: N806
    creation = IntEnum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"], start=0)

    class Cache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self):
            return self.data + b"+"  # a build adds its tactic timings

    class Config:
        default_device_type = None
        DLA_core = None

        def set_memory_pool_limit(self, pool, size):
            calls["pool"][pool] = size

        def set_flag(self, flag):
            calls["flags"].append(flag.name)

        def add_optimization_profile(self, profile):
            calls["profiles"].append(profile.shapes)

        def create_timing_cache(self, data):
            calls["cache_in"] = bytes(data)
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = {"input": name, "min": list(lo), "opt": list(opt), "max": list(hi)}

    class Builder:
        num_DLA_cores = 2

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return SimpleNamespace()

        def create_builder_config(self):
            calls["config"] = Config()
            return calls["config"]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["dla"] = config.DLA_core
            record = {k: v for k, v in calls.items() if k not in ("config", "cache_in")}
            return json.dumps(record, default=str).encode()

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls["parsed"] = path
            return True

    return SimpleNamespace(
        __version__=version,
        calls=calls,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder,
        OnnxParser=OnnxParser,
        BuilderFlag=BuilderFlag,
        NetworkDefinitionCreationFlag=creation,
        MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
        DeviceType=SimpleNamespace(DLA="dla", GPU="gpu"),
    )
