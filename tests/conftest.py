"""Shared fixtures: tiny configs and a tiny synthetic dataset, built once per session.

`PBD_TEST_ORT_THREADS=N python -m pytest` runs every ONNX Runtime session created in the test
process with N intra-op threads where the code leaves the count to ORT (0: one per core);
`OMP_NUM_THREADS=N` sets torch's. Comparisons between backends or thread counts go through
`pbd_deploy.core.compare`, so the suite passes at any of these counts.
"""

from __future__ import annotations

import os

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
    """Eight short synthetic videos with 3 classes: 4 train, 1 val, 3 test.

    Three test videos, so that every parity and mAP test compares several videos' rankings.
    """
    from pbd_deploy.data.synthetic import SynthConfig, make_synthetic

    out = tmp_path_factory.mktemp("synth") / "data"
    config = SynthConfig(
        videos=8, classes=3, min_duration=8, max_duration=12, seed=1,
        split_fractions=(0.5, 0.125, 0.375),
    )  # fmt: skip
    return make_synthetic(out, config)


@pytest.fixture(scope="session", autouse=True)
def ort_threads():
    """ONNX Runtime's intra-op threads from PBD_TEST_ORT_THREADS (see the module docstring)."""
    threads = int(os.environ.get("PBD_TEST_ORT_THREADS", "0"))
    if not threads:
        yield 0
        return
    import onnxruntime as ort

    original = ort.InferenceSession.__init__

    def init(self, model, sess_options=None, *args, **kwargs):
        sess_options = sess_options or ort.SessionOptions()
        if sess_options.intra_op_num_threads == 0:
            sess_options.intra_op_num_threads = threads
        original(self, model, sess_options, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ort.InferenceSession, "__init__", init)
        yield threads


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
