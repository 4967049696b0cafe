"""fast_postprocess returns exactly what eval.postprocess.postprocess returns."""

import numpy as np
import pytest

from pbd_deploy.core.postprocess import PostprocessConfig, postprocess
from pbd_deploy.core.nms import fast_postprocess


@pytest.mark.parametrize("seed", range(40))
def test_identical_to_the_eval_postprocess(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    segments = np.sort(rng.uniform(0, 30, (n, 2)), axis=1)
    scores = rng.uniform(0, 1, n)
    if seed % 2:  # many exact score ties
        scores = np.round(scores, 1)
    if seed % 3 == 0:  # identical and zero-length segments, tied IoUs
        segments = np.round(segments)
    labels = rng.integers(0, int(rng.integers(1, 5)), n)
    config = PostprocessConfig(
        max_detections=int(rng.choice([1, 7, 50, 200])),
        soft_method=("gaussian", "linear")[seed % 2],
        min_score=float(rng.choice([0.001, 0.1])),
        iou_threshold=float(rng.choice([0.1, 0.5])),
    )
    expected = postprocess(segments, scores, labels, config)
    got = fast_postprocess(segments, scores, labels, config)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_other_methods_delegate():
    rng = np.random.default_rng(0)
    segments, scores = np.sort(rng.uniform(0, 9, (30, 2)), 1), rng.uniform(0, 1, 30)
    labels = rng.integers(0, 2, 30)
    for method in ("hard", "none"):
        config = PostprocessConfig(nms_method=method)
        for a, b in zip(
            fast_postprocess(segments, scores, labels, config),
            postprocess(segments, scores, labels, config),
        ):
            np.testing.assert_array_equal(a, b)
