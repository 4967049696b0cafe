"""The whole detection chain, checked with an oracle that predicts the ground truth."""

import numpy as np
import pytest
import torch

from pbd_deploy.core.annotations import ground_truth, load_annotations
from pbd_deploy.core.metrics import THUMOS_THRESHOLDS, evaluate_detections
from pbd_deploy.core.postprocess import PostprocessConfig
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.eval.inference import evaluate_model
from pbd_deploy.models.actionformer import assign_targets, decode_segments, point_grid
from pbd_deploy.models.detector import Detector
from tests.conftest import tiny_config


class Oracle(torch.nn.Module):
    """Predicts, for the window it is given, the targets training would assign."""

    def __init__(self, dataset, video, starts):
        super().__init__()
        self.dataset, self.video, self.starts = dataset, video, list(starts)
        self.config = dataset.config
        self.grid = point_grid(self.config.head)
        self.register_buffer("positions", self.grid[0])

    def predict(self, x):
        scores, segments = [], []
        _, fps = self.dataset.load(self.video)
        segs, labels = self.dataset.segments_in_steps(self.video, fps)
        for _ in range(x.shape[0]):
            start = self.starts.pop(0)
            scale = self.config.head.length / self.config.input.window
            points = torch.tensor((segs - start) * scale - 0.5, dtype=torch.float32)
            cls, reg = assign_targets(
                points,
                torch.tensor(labels),
                len(self.config.class_names),
                self.config.head,
                self.grid,
            )
            scores.append(cls)
            segments.append(decode_segments(self.grid[0], reg))
        return torch.stack(scores), torch.stack(segments)


@pytest.fixture
def long_window_dataset(synth_data):
    classes = load_annotations(synth_data / "annotations.json").class_names
    config = tiny_config(classes=classes, window=128)
    return TadDataset(synth_data, config)


def test_oracle_predictions_score_perfect_map(long_window_dataset, monkeypatch):
    """Targets -> decode -> seconds -> NMS -> mAP must reproduce the ground truth exactly."""
    ds = long_window_dataset
    videos = ds.split("test")
    predictions = {}
    from pbd_deploy.eval import inference

    for video in videos:
        starts = [s for s, _, _ in ds.sliding_windows(video)]
        assert len(starts) == 1, "synthetic test videos are shorter than one 12.8 s window"
        oracle = Oracle(ds, video, starts)
        predictions[video.video_id] = inference.detect_video(oracle, ds, video, PostprocessConfig())
    result = evaluate_detections(ground_truth(videos), predictions, THUMOS_THRESHOLDS)
    np.testing.assert_allclose(result.mAP, 1.0)
    # boundaries come back to the annotation's seconds (video ends clip the last one)
    for video in videos:
        for ann in video.annotations:
            best = max(
                (p for p in predictions[video.video_id] if p["label"] == ann.label),
                key=lambda p: p["score"] - abs(p["segment"][0] - ann.start),
            )
            assert best["segment"][0] == pytest.approx(ann.start, abs=1e-6)


def test_untrained_model_scores_low_but_runs(long_window_dataset):
    torch.manual_seed(0)
    model = Detector(long_window_dataset.config)
    result, predictions = evaluate_model(model, long_window_dataset, "test")
    assert set(predictions) == {v.video_id for v in long_window_dataset.split("test")}
    assert 0.0 <= result.average_mAP < 0.5
    assert all(len(p) <= 200 for p in predictions.values())
