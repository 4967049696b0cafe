"""A tiny untrained model directory that knows the synthetic dataset's classes."""

import pytest
import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import save_model
from tests.conftest import tiny_config


@pytest.fixture(scope="session")
def tiny_model_dir(synth_data, tmp_path_factory):
    torch.manual_seed(5)
    classes = load_annotations(synth_data / "annotations.json").class_names
    return save_model(
        Detector(tiny_config(classes, depth=4)), tmp_path_factory.mktemp("m") / "base"
    )
