"""Tiny model directories for the bench tests: a 4-block base and its 3-block drop."""

from __future__ import annotations

import pytest
import torch

from pbd_deploy.compress.blocks import drop_block
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import save_model
from tests.conftest import tiny_config


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """(base, dropped): tiny detectors saved as model directories."""
    root = tmp_path_factory.mktemp("bench_models")
    torch.manual_seed(0)
    base = Detector(tiny_config()).eval()
    return save_model(base, root / "base"), save_model(drop_block(base, 3), root / "small")
