"""The export directory's manifest, model.json, and the checks that a model file belongs to it.

model.json is written by `pbd_deploy.export` and is the runtime's only description of the
model: input/output names and shapes, the model config (input spec, head, class names),
post-processing parameters, and the sha256 of every model file exported with it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pbd_deploy.errors import PbdError

MANIFEST = "model.json"
FORMAT = "pbd-deploy-export"
VERSION = 1


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model_path(path: str | Path) -> Path:
    """The model file a user named: a .onnx/.engine file, or an export directory's model.onnx."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise PbdError(f"model file not found: {path} (pass a .onnx or .engine file from export)")
    if path.suffix not in (".onnx", ".engine"):
        raise PbdError(f"{path} is not a .onnx or .engine file")
    return path


def load_manifest(model_path: Path) -> dict:
    """Read model.json beside `model_path` and check it describes that file.

    Raises:
        PbdError: no or unreadable model.json, or a file whose hash it does not list (an ONNX
            from another model, or one edited after export).
    """
    path = model_path.parent / MANIFEST
    if not path.is_file():
        raise PbdError(
            f"{path} is missing: keep the model.json written by `pbd-deploy export` beside "
            f"{model_path.name}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PbdError(f"cannot read {path}: {exc}") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise PbdError(f"{path} is not a pbd-deploy export manifest (version {VERSION})")
    if model_path.suffix == ".onnx":
        check_listed(manifest, model_path)
    return manifest


def check_listed(manifest: dict, model_path: Path) -> dict:
    """The manifest's entry for `model_path`, refusing a file it was not exported with."""
    entry = manifest.get("files", {}).get(model_path.name)
    actual = file_sha256(model_path)
    if entry is None or entry.get("sha256") != actual:
        known = ", ".join(sorted(manifest.get("files", {}))) or "none"
        raise PbdError(
            f"{model_path} does not belong to {model_path.parent / MANIFEST} (its sha256 is not "
            f"the one recorded; files listed: {known}): it comes from another model or was "
            "modified; re-export it with pbd-deploy export"
        )
    return entry


def find_onnx_by_hash(manifest: dict, sha256: str) -> str | None:
    """Name of the manifest's ONNX file with this hash (what an engine was built from)."""
    for name, entry in manifest.get("files", {}).items():
        if entry.get("sha256") == sha256:
            return name
    return None
