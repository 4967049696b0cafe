"""Tiny model directories and one cached export, shared by the export and runtime tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.export import ExportConfig, export_model
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import save_model
from tests.conftest import tiny_config


def tiny_model_dir(out: Path, data: Path, seed: int = 0, **config) -> Path:
    """A freshly initialised tiny detector for the classes of `data`, saved to `out`."""
    classes = load_annotations(data / "annotations.json").class_names
    torch.manual_seed(seed)
    model = Detector(tiny_config(classes=classes, **config)).eval()
    return save_model(model, out)


def deployed(tmp_path_factory, data: Path) -> Path:
    """An export of a tiny model with fp16 and int8 variants, built once per session."""
    root = tmp_path_factory.getbasetemp() / "deployed"
    if not (root / "deploy" / "model.json").is_file():
        model_dir = tiny_model_dir(root / "model", data)
        config = ExportConfig(fp16=True, int8=True, calib=str(data))
        export_model(model_dir, root / "deploy", config, force=True)
    return root / "deploy"


def fake_dynamic_engine(tmp_path_factory, data: Path, out: Path, trt, device) -> Path:
    """A dynamic-batch (1..4) engine of the tiny export, built by the stand-in `trt` on
    `device` into `out` beside its model.json and model.onnx; returns the engine path."""
    from pbd_deploy.export.config import EngineConfig
    from pbd_deploy.export.tensorrt import build_engine

    export = deployed(tmp_path_factory, data)
    manifest = json.loads((export / "model.json").read_text())
    manifest["input"]["shape"] = ["batch", 3, 32, 32, 32]
    (out / "model.json").write_text(json.dumps(manifest))
    (out / "model.onnx").write_bytes((export / "model.onnx").read_bytes())
    config = EngineConfig(min_shape=(1, 32), opt_shape=(2, 32), max_shape=(4, 32),
                          timing_cache=str(out / "t.cache"))  # fmt: skip
    build_engine(out / "model.onnx", out / "model.engine", config, trt, device)
    return out / "model.engine"


def runtime_and_torch(root: Path, data: Path, split: str = "test"):
    """Every `split` video of `data` detected twice: by root/deploy/model.onnx through the
    torch-free runtime and by root/model through eval's torch path (the model's own
    post-processing). Returns (runtime's, torch's, the dataset, their `match_predictions`)."""
    from pbd_deploy.core.compare import match_predictions
    from pbd_deploy.data.dataset import TadDataset
    from pbd_deploy.eval.inference import detect_video
    from pbd_deploy.models.io import load_model
    from pbd_deploy.runtime import Detector as Runtime

    model = load_model(root / "model")
    ds = TadDataset(data, model.config)
    runtime = Runtime(root / "deploy" / "model.onnx", providers=["CPUExecutionProvider"])
    ours, theirs = {}, {}
    for video in ds.split(split):
        path = ds.root / "videos" / f"{video.video_id}.mp4"
        ours[video.video_id] = [d.to_dict() for d in runtime.detect(path, duration=video.duration)]
        theirs[video.video_id] = detect_video(model, ds, video)
    match = match_predictions(ours, theirs, max_detections=runtime.postprocess.max_detections)
    return ours, theirs, ds, match
