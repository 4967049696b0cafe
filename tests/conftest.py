"""Shared fixtures: tiny configs and a tiny synthetic dataset, built once per session."""

from __future__ import annotations

import pytest
import torch

from pbd_deploy.models.actionformer import HeadConfig
from pbd_deploy.models.detector import Detector, DetectorConfig, InputConfig
from pbd_deploy.models.vit import BackboneConfig


def tiny_config(classes=("a", "b", "c"), depth=4, window=32) -> DetectorConfig:
    """A detector small enough for unit tests: 4 blocks of width 32 on 32x32 frames."""
    return DetectorConfig(
        name="videomae-tiny",
        class_names=list(classes),
        input=InputConfig(window=window, fps=10.0, resize=32, crop=32),
        backbone=BackboneConfig(dim=32, depth=depth, heads=2, img_size=32),
        head=HeadConfig(
            in_dim=32,
            dim=32,
            length=16,
            levels=3,
            heads=2,
            attn_window=5,
            regression_ranges=[[0, 4], [4, 8], [8, 10000]],
        ),
    )


@pytest.fixture
def tiny_model() -> Detector:
    torch.manual_seed(0)
    return Detector(tiny_config()).eval()


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """Six short synthetic videos (2 per split) with 3 classes."""
    from pbd_deploy.data.synthetic import SynthConfig, make_synthetic

    out = tmp_path_factory.mktemp("synth") / "data"
    return make_synthetic(
        out, SynthConfig(videos=6, classes=3, min_duration=8, max_duration=12, seed=1)
    )


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` / `trt` tests, with the reason, where the hardware or library is absent."""
    import importlib.util

    missing = {
        "gpu": None if torch.cuda.is_available() else "needs a CUDA GPU (none on this machine)",
        "trt": None if importlib.util.find_spec("tensorrt") else "needs TensorRT (not installed)",
    }
    for item in items:
        for mark, reason in missing.items():
            if reason and mark in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
