import numpy as np
import pytest

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from tests.conftest import tiny_config


@pytest.fixture
def dataset(synth_data):
    classes = load_annotations(synth_data / "annotations.json").class_names
    config = tiny_config(classes=classes)
    config.input.resize = 40
    return TadDataset(synth_data, config)


def test_centre_crop_for_eval_and_random_crops_for_training(dataset):
    frames = np.arange(4 * 40 * 40 * 3, dtype=np.uint8).reshape(4, 40, 40, 3)
    centre = dataset.model_input(frames)
    assert centre.shape == (3, 4, 32, 32)
    assert np.array_equal(centre, dataset.model_input(frames))
    rng = np.random.default_rng(0)
    crops = {dataset.model_input(frames, rng).tobytes() for _ in range(20)}
    assert len(crops) > 5
    expected = dataset.model_input(frames[:, 4:36, 4:36])  # centre = offset (40 - 32) / 2
    dataset.input.crop = 32
    assert np.allclose(centre, expected)


def test_frames_smaller_than_the_crop_are_refused(dataset):
    with pytest.raises(PbdError, match="smaller than the 32x32 crop"):
        dataset.model_input(np.zeros((4, 30, 30, 3), np.uint8))


def test_training_windows_hold_the_actions_they_claim(dataset):
    rng = np.random.default_rng(0)
    found = 0
    for video in dataset.split("train") * 5:
        x, segments, labels, valid = dataset.training_window(video, rng)
        assert x.shape == (3, dataset.input.window, 32, 32)
        assert len(segments) == len(labels)
        found += len(labels)
        assert (segments[:, 0] >= -0.5).all()
        assert (segments[:, 1] <= dataset.config.head.length - 0.5).all()
        assert 0 < valid <= dataset.config.head.length
    assert found > 0  # (a 3.2 s window can hold less than half of a long action, so none)
