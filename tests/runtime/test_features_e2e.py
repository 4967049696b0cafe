"""Feature mode end to end: .npy features -> export -> the torch-free runtime and `eval`."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.core.annotations import ground_truth, load_annotations
from pbd_deploy.core.compare import assert_same_map, match_predictions
from pbd_deploy.core.metrics import (
    THUMOS_THRESHOLDS,
    DetectionResult,
    evaluate_detections,
    load_predictions,
)
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.inference import detect_video
from pbd_deploy.export import ExportConfig, export_model
from pbd_deploy.models.actionformer import HeadConfig
from pbd_deploy.models.detector import Detector as TorchDetector
from pbd_deploy.models.detector import DetectorConfig, InputConfig
from pbd_deploy.models.io import load_model, save_model
from pbd_deploy.runtime import Detector

DIM, STRIDE = 12, 2.0  # 12 channels, one feature row per 2 frames (5 rows/s at 10 fps)


def feature_config(classes) -> DetectorConfig:
    return DetectorConfig(
        name="features",
        class_names=list(classes),
        input=InputConfig(mode="features", window=16, feature_dim=DIM, feature_stride=STRIDE),
        backbone=None,
        head=HeadConfig(
            in_dim=DIM,
            dim=16,
            length=16,
            levels=3,
            heads=2,
            attn_window=5,
            regression_ranges=[[0, 4], [4, 8], [8, 10000]],
        ),
    )


@pytest.fixture(scope="module")
def feature_export(tmp_path_factory, synth_data):
    """The synthetic annotations with a (T, 12) feature file per video, a fresh feature-mode
    model, and its export (which measures parity and mAP on the features' test split)."""
    root = tmp_path_factory.mktemp("features")
    data = root / "data"
    (data / "features").mkdir(parents=True)
    shutil.copy(synth_data / "annotations.json", data / "annotations.json")
    annotations = load_annotations(data / "annotations.json")
    rng = np.random.default_rng(0)
    for video in annotations.videos.values():
        rows = int(round(video.duration * video.fps / STRIDE))
        np.save(data / "features" / f"{video.video_id}.npy", rng.normal(size=(rows, DIM)))
    torch.manual_seed(0)
    model = TorchDetector(feature_config(annotations.class_names)).eval()
    model_dir = save_model(model, root / "model")
    export_model(model_dir, root / "deploy", ExportConfig(data=str(data)))
    return data, model_dir, root / "deploy"


def test_feature_model_detects_through_the_runtime_like_torch(feature_export, tmp_path):
    data, model_dir, deploy = feature_export
    manifest = json.loads((deploy / "model.json").read_text())
    assert manifest["input"] == {"name": "features", "shape": [1, DIM, 16], "dtype": "float32"}
    assert manifest["parity"]["detections_same"] is True
    model = load_model(model_dir)
    dataset = TadDataset(data, model.config)
    runtime = Detector(deploy / "model.onnx")
    videos = dataset.split("test")
    assert len(videos) >= 3
    ours, theirs = {}, {}
    for video in videos:
        features = np.load(data / "features" / f"{video.video_id}.npy")
        dets = runtime.detect(features, fps=video.fps, duration=video.duration)
        ours[video.video_id] = [d.to_dict() for d in dets]
        theirs[video.video_id] = detect_video(model, dataset, video, runtime.postprocess)
        # clipped to the video's end (in float32, hence the 1e-4)
        assert ours[video.video_id] and max(d.end_s for d in dets) <= video.duration + 1e-4
    cap = runtime.postprocess.max_detections
    match = match_predictions(ours, theirs, max_detections=cap)
    assert match.same, match.problems[:5]
    gt = ground_truth(videos)
    ours_map = evaluate_detections(gt, ours, THUMOS_THRESHOLDS)
    assert_same_map(ours_map, evaluate_detections(gt, theirs, THUMOS_THRESHOLDS), match, gt)
    # `pbd-deploy eval deploy/model.onnx --data DATA` runs the same runtime on the files.
    saved = tmp_path / "preds.json"
    args = ["eval", deploy / "model.onnx", "--data", data, "--json", "--save-predictions", saved]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    match = match_predictions(load_predictions(saved), ours, max_detections=cap)
    assert match.same, match.problems[:5]
    assert_same_map(ours_map, _as_result(json.loads(result.output)), match, gt)
    with pytest.raises(PbdError, match="feature-mode model takes a .T, C. feature array"):
        runtime.detect(data / "features" / f"{videos[0].video_id}.npy")


def _as_result(payload: dict) -> DetectionResult:
    per_class = {k: np.array(v) for k, v in payload["per_class"].items()}
    return DetectionResult(
        tuple(payload["thresholds"]), np.array(payload["mAP"]), payload["average_mAP"], per_class
    )
