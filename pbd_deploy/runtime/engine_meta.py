"""Metadata saved beside a TensorRT engine, and the check that it fits this machine.

An engine is only valid for the TensorRT version and GPU model (name, compute capability
and SM count: Orin modules share the name and sm_87 but not the SM count) it was built
with; loading it elsewhere fails deep inside TensorRT or, worse, runs tactics tuned for
another chip. The metadata also carries the engine's sha256, so an engine copied over
without its metadata is refused. The runtime compares all of it first and says what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pbd_deploy.core.atomic import check_checksum
from pbd_deploy.errors import PbdError


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine depends on: TensorRT version, GPU name, compute capability, SM count."""

    trt_version: str
    device_name: str
    compute_capability: tuple[int, int]
    sm_count: int | None = None


ENGINE_SHA256 = "engine_sha256"  # the metadata's key for the engine file's hash (core/atomic)


def metadata_path(engine_path: str | Path) -> Path:
    """model.engine -> model.engine.json."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def engine_metadata(device: DeviceInfo, precision: str, profiles: list[dict], **extra) -> dict:
    """The JSON written beside an engine."""
    return {
        "trt_version": device.trt_version,
        "device_name": device.device_name,
        "compute_capability": list(device.compute_capability),
        "sm_count": device.sm_count,
        "precision": precision,
        "profiles": profiles,
        **extra,
    }


def read_metadata(engine_path: str | Path) -> dict:
    path = metadata_path(engine_path)
    if not path.is_file():
        raise PbdError(
            f"{path} is missing: an engine needs the metadata written when it was built; "
            "rebuild it with pbd-deploy build-engine"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PbdError(f"cannot read {path}: {exc}") from None


def check_engine_bytes(meta: dict, data: bytes, engine_path: str | Path) -> None:
    """Refuse engine bytes that are not the ones the metadata was written for."""
    if ENGINE_SHA256 not in meta:
        raise PbdError(
            f"{metadata_path(engine_path)} does not record the engine's sha256 (written by an "
            "older pbd-deploy); rebuild the engine with pbd-deploy build-engine"
        )
    check_checksum(data, meta, engine_path, key=ENGINE_SHA256)


def check_engine_fits(meta: dict, device: DeviceInfo, engine_path: str | Path) -> None:
    """Refuse an engine built for another TensorRT version or another GPU model."""
    built = tuple(meta.get("compute_capability", ()))
    problems = []
    if meta.get("trt_version") != device.trt_version:
        problems.append(
            f"TensorRT {meta.get('trt_version')} (this machine has {device.trt_version})"
        )
    if built != tuple(device.compute_capability) or meta.get("device_name") != device.device_name:
        cc = ".".join(map(str, built)) or "?"
        here = ".".join(map(str, device.compute_capability))
        problems.append(
            f"{meta.get('device_name')} sm {cc} (this machine has {device.device_name} sm {here})"
        )
    elif meta.get("sm_count") != device.sm_count:
        problems.append(
            f"a {meta.get('device_name')} with {meta.get('sm_count')} SMs (this one has "
            f"{device.sm_count})"
        )
    if problems:
        raise PbdError(
            f"{engine_path} was built for " + " and ".join(problems) + "; rebuild it on this "
            "device with: pbd-deploy build-engine model.onnx"
        )
