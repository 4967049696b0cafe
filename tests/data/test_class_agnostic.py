"""A class-agnostic model's training targets are OpenTAD's `class_agnostic=True` targets
(tests/fixtures/opentad/class_agnostic.json, make_class_agnostic_fixture.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from pbd_deploy.core.video import write_video
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import DetectorConfig, InputConfig
from tests.conftest import tiny_config

FIXTURE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "opentad" / "class_agnostic.json").read_text()
)


def resized(classes, class_agnostic: bool) -> DetectorConfig:
    """OpenTAD's resize input at the fixture's size: resize_length x scale_factor frames."""
    length = FIXTURE["resize_length"]
    config = tiny_config(classes=classes, window=length * FIXTURE["scale_factor"])
    config.input = InputConfig(sampling="resize", window=config.input.window, resize=32, crop=32)
    config.head.length = length
    config.class_agnostic = class_agnostic
    return DetectorConfig.from_dict(config.to_dict())  # validated as a file would be


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The fixture's annotation file, with a video file of the fixture's frame count each."""
    root = tmp_path_factory.mktemp("class_agnostic")
    (root / "videos").mkdir()
    database = json.loads(json.dumps(FIXTURE["database"]))
    frames = np.zeros((FIXTURE["frames"], 32, 32, 3), np.uint8)
    for video_id, video in database.items():
        video["fps"] = FIXTURE["frames"] / video["duration"]
        write_video(root / "videos" / f"{video_id}.mp4", frames, fps=video["fps"])
    (root / "annotations.json").write_text(json.dumps({"database": database}))
    return root


def test_targets_equal_opentads_class_agnostic_dataset(data):
    ds = TadDataset(data, resized(["action"], class_agnostic=True))
    videos = ds.split("train")
    assert sorted(v.video_id for v in videos) == sorted(FIXTURE["class_agnostic"])
    for video in videos:
        points, labels = ds.window_targets(video, 0)
        expected = FIXTURE["class_agnostic"][video.video_id]
        # each segment once: v_a's segment under two labels, v_b's annotated twice
        np.testing.assert_allclose(points, expected["gt_segments"], atol=2e-5)
        assert labels.tolist() == expected["gt_labels"] == [0] * len(points)


def test_per_class_targets_keep_the_labels(data):
    """The contrast: the same file for a model of OpenTAD's 4 classes (its class map)."""
    ds = TadDataset(data, resized(FIXTURE["class_map"], class_agnostic=False))
    for video in ds.split("train"):
        if video.video_id == "v_b":  # annotated twice: OpenTAD drops the copy, we keep it
            continue
        points, labels = ds.window_targets(video, 0)
        expected = FIXTURE["per_class"][video.video_id]
        np.testing.assert_allclose(points, expected["gt_segments"], atol=2e-5)
        assert labels.tolist() == expected["gt_labels"]


def test_a_one_class_model_that_is_not_class_agnostic_refuses_the_labels(data):
    with pytest.raises(PbdError, match="labels the model does not know") as err:
        TadDataset(data, resized(["action"], class_agnostic=False))
    assert "\n" not in str(err.value)


def test_class_agnostic_needs_exactly_one_class():
    data = resized(["action"], class_agnostic=True).to_dict()
    for change, message in [
        ({"class_names": ["a", "b"]}, "a class-agnostic detector has exactly one class"),
        ({"class_agnostic": "yes"}, "class_agnostic must be true or false"),
    ]:
        with pytest.raises(PbdError, match=message) as err:
            DetectorConfig.from_dict({**data, **change})
        assert "\n" not in str(err.value)
    old = {k: v for k, v in data.items() if k != "class_agnostic"}  # written before the field
    assert DetectorConfig.from_dict(old).class_agnostic is False
