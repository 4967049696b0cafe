"""Training on sampling "resize": each video is one whole window, with OpenTAD's ground truth."""

import json
from pathlib import Path

import numpy as np
import pytest

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.core.video import write_video
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.data.loader import epoch_plan
from pbd_deploy.models.detector import Detector, InputConfig
from pbd_deploy.train import TrainConfig, train
from tests.conftest import tiny_config

FIXTURE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "opentad" / "resize.json").read_text()
)["ground_truth"]


def _resized(classes, window: int, length: int):
    config = tiny_config(classes=classes, window=window)
    config.input = InputConfig(sampling="resize", window=window, resize=32, crop=32)
    config.head.length = length
    return config


def test_ground_truth_in_head_points_equals_opentads(tmp_path):
    """OpenTAD's LoadFrames("resize") maps [start, end] s to clip(t / duration, 0, 1) * 192."""
    duration, length = FIXTURE["duration"], FIXTURE["resize_length"]
    keep = [i for i, (s, _) in enumerate(FIXTURE["segments_s"]) if s >= 0]  # ours refuses < 0
    segments = [FIXTURE["segments_s"][i] for i in keep]
    frames = np.zeros((30, 32, 32, 3), np.uint8)
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "v.mp4", frames, fps=30 / duration)  # 60 s long
    annotations = {"database": {"v": {
        "subset": "training", "duration": duration, "fps": 30 / duration,
        "annotations": [{"label": "a", "segment": s} for s in segments],
    }}}  # fmt: skip
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    ds = TadDataset(tmp_path, _resized(["a"], 4 * length, length), past_end="keep")
    video = ds.split("train")[0]
    points, labels = ds.window_targets(video, 0)
    expected = np.asarray([FIXTURE["points"][i] for i in keep], np.float32)
    np.testing.assert_allclose(points, expected, atol=2e-5)  # OpenTAD rounds in float32
    assert labels.tolist() == [0] * len(keep)


@pytest.mark.parametrize("augment", [False, True])
def test_training_windows_are_whole_videos(synth_data, augment):
    classes = load_annotations(synth_data / "annotations.json").class_names
    ds = TadDataset(synth_data, _resized(classes, 32, 16))
    videos = ds.split("train")
    plan = epoch_plan(ds, videos, 2, np.random.default_rng(0), augment)
    assert len(plan) == 2 * len(videos)
    assert {(start, count) for _, start, count, _ in plan} == {(0, 32)}
    x, points, labels, valid = ds.training_sample(videos[0], *plan[0][1:])
    assert x.shape == (3, 32, 32, 32) and valid == 16
    assert len(points) == len(videos[0].annotations) and points.min() >= 0


def test_training_on_resized_videos_learns(synth_data):
    classes = load_annotations(synth_data / "annotations.json").class_names
    dataset = TadDataset(synth_data, _resized(classes, 32, 16))
    model = Detector(dataset.config)
    config = TrainConfig(epochs=3, batch_size=2, windows_per_video=2, lr=2e-3)
    trained, summary = train(model, dataset, config)
    assert summary["epochs"][-1]["loss"] < summary["epochs"][0]["loss"]
    assert trained.config.input.sampling == "resize"
