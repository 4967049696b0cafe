"""What `bench` accepts: model directories, .onnx files and TensorRT .engine files.

A source knows its input shape and, where it can be counted, its MACs and parameters.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from pbd_deploy.bench.config import BenchConfig
from pbd_deploy.errors import PbdError


@dataclass
class Source:
    """One model to benchmark."""

    path: Path
    kind: str  # "dir", "onnx" or "engine"
    shape: tuple[int, ...] | None  # input shape (B, 3, T, H, W); None until a backend reads it
    model: object | None = None  # the Detector of a model directory
    config: object | None = None  # its DetectorConfig with the benchmarked window
    macs: int | None = None
    params: int | None = None
    window_seconds: float | None = None
    onnx_path: Path | None = None  # exported on demand for the ort backend

    @property
    def label(self) -> str:
        if self.kind == "dir":
            return self.path.resolve().name
        return f"{self.path.resolve().parent.name}/{self.path.name}"  # model.onnx is common


def load_source(path: str | Path, config: BenchConfig) -> Source:
    """Open `path` as a model directory, an .onnx file or an .engine file."""
    path = Path(path)
    if path.is_dir():
        return _model_dir(path, config)
    if not path.exists():
        raise PbdError(f"{path} does not exist; give a model directory, an .onnx or an .engine")
    if path.suffix == ".onnx":
        return Source(path, "onnx", None, **_sidecar(path, config))
    if path.suffix in (".engine", ".plan", ".trt"):
        return Source(path, "engine", None, **_sidecar(path, config))
    raise PbdError(f"{path} is not a model directory, an .onnx or an .engine file")


def _model_dir(path: Path, config: BenchConfig) -> Source:
    from pbd_deploy.models.complexity import count_macs, count_params
    from pbd_deploy.models.io import load_model

    model = load_model(path)
    cfg = copy.deepcopy(model.config)
    if config.window:
        cfg.input.window = config.window
    inp = cfg.input
    if inp.mode == "features":
        shape = (config.batch, inp.feature_dim, inp.window)
    else:
        shape = (config.batch, 3, inp.window, inp.crop, inp.crop)
    return Source(
        path,
        "dir",
        shape,
        model=model,
        config=cfg,
        macs=count_macs(cfg, config.batch)["total"],
        params=count_params(model),
        window_seconds=inp.window_frames / (inp.fps or config.fps),
    )


def _sidecar(path: Path, config: BenchConfig) -> dict:
    """MACs, params and video seconds from the export's model.json beside the file.

    `pbd-deploy export` records the model config and the exported window there; a dynamic
    graph is benchmarked at --window when given. Without model.json (or without torch,
    which counts them) they stay unknown.
    """
    try:
        import torch

        from pbd_deploy.models.complexity import count_macs, count_params
        from pbd_deploy.models.detector import Detector, DetectorConfig
    except ImportError:
        return {}

    meta_path = path.with_name("model.json")
    try:
        meta = json.loads(meta_path.read_text())
        cfg = DetectorConfig.from_dict(meta["model_config"], f"{meta_path} (model_config)")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, PbdError):
        return {}
    window = meta.get("window") or cfg.input.window
    if meta.get("dynamic_axes") and config.window:
        window = config.window
    cfg.input.window = window
    with torch.device("meta"):
        params = count_params(Detector(cfg))
    return {
        "macs": count_macs(cfg, config.batch)["total"],
        "params": params,
        "window_seconds": cfg.input.window_frames / (cfg.input.fps or config.fps),
    }


def resolve_shape(declared: list, config: BenchConfig, where: Path) -> tuple[int, ...]:
    """A concrete input shape from a declared one whose dims may be symbolic (None/str).

    The batch dim takes --batch; a symbolic window dim takes --window; any other
    symbolic dim cannot be guessed and is an error.
    """
    shape = []
    for i, dim in enumerate(declared):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif i == 0:
            shape.append(config.batch)
        elif i == 2 and config.window:
            shape.append(config.window)
        else:
            hint = " (give --window)" if i == 2 else ""
            raise PbdError(f"{where} has a dynamic input dimension {i} ({dim!r}){hint}")
    if shape[0] != config.batch and isinstance(declared[0], int):
        raise PbdError(f"{where} is built for batch {shape[0]}, not --batch {config.batch}")
    return tuple(shape)


def check_same_inputs(sources: list[Source]) -> None:
    """All models must take the same input, or their latencies are not comparable."""
    shapes = {s.label: s.shape for s in sources if s.shape is not None}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} takes {tuple(v)}" for k, v in shapes.items())
        raise PbdError(
            f"the models take different inputs ({listed}); benchmark models with the same "
            "input shape (--window sets it for model directories)"
        )
