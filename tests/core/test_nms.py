"""fast_postprocess returns exactly what core.postprocess.postprocess (the reference) returns.

Both of its loops are checked: the compiled one (numba, the default) and the numpy one
(without numba, or when the compiled replay diverges), on random cases with exact ties and
on real candidates of a trained quickstart model.
"""

from pathlib import Path

import numpy as np
import pytest

from pbd_deploy.core import nms
from pbd_deploy.core.nms import fast_postprocess, numpy_postprocess
from pbd_deploy.core.postprocess import PostprocessConfig, postprocess

REAL = Path(__file__).parents[1] / "fixtures" / "softnms_candidates.npz"


def _random_case(seed):
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
        soft_method=("gaussian", "linear")[seed % 2 if seed % 5 else 0],
        min_score=float(rng.choice([0.001, 0.1])),
        iou_threshold=float(rng.choice([0.1, 0.5])),
    )
    return segments, scores, labels, config


def _assert_identical(got, expected):
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def _compiled(segments, scores, labels, config):
    """The compiled loop alone: it must not fall back to the numpy loop on these cases."""
    jit = nms._jit()
    assert jit is not None, "numba is a dependency of the runtime; install it"
    segments, scores = np.asarray(segments, np.float64), np.asarray(scores, np.float64)
    got = nms._compiled(jit, segments, scores, np.asarray(labels, np.int64), config)
    assert got is not None, "the exact replay diverged from the speculated picks"
    return got


@pytest.mark.parametrize("seed", range(40))
def test_identical_to_the_reference(seed):
    segments, scores, labels, config = _random_case(seed)
    expected = postprocess(segments, scores, labels, config)
    _assert_identical(fast_postprocess(segments, scores, labels, config), expected)
    _assert_identical(_compiled(segments, scores, labels, config), expected)
    args = (segments.astype(np.float64), scores.astype(np.float64), labels.astype(np.int64))
    _assert_identical(numpy_postprocess(*args, config), expected)


def test_real_candidates():
    """Candidates of the quickstart model (videomae-tiny trained 2 epochs on 30 synthetic
    videos) on three test videos, as the runtime gathers them before Soft-NMS."""
    with np.load(REAL) as real:
        videos = sorted({k.split("/")[0] for k in real.files})
        assert len(videos) >= 3
        for video in videos:
            segments, scores, labels = (real[f"{video}/{n}"] for n in ("seg", "score", "label"))
            assert len(scores) > 1000  # every point/class above 0.001: the costly case
            for sigma, limit in ((0.5, 200), (0.7, 2000)):
                config = PostprocessConfig(sigma=sigma, max_detections=limit)
                expected = postprocess(segments, scores, labels, config)
                _assert_identical(_compiled(segments, scores, labels, config), expected)


def test_replay_divergence_falls_back_to_numpy(monkeypatch):
    """A replay that needs a decay it was not given (as after a last-bit exp difference)
    gives the numpy loop's, still identical, result."""
    segments, scores, labels, config = _random_case(10)
    jit = nms._jit()

    def first_pick_only(*args):  # a speculation that got every pick after the first wrong
        picks, kept, cls, ok, rows = jit.soft_nms_merge(*args)
        if args[-1] is not None:
            return picks, kept, cls, ok, rows
        row_start, row_j, iou = rows
        rows = row_start[:2], row_j[: row_start[1]], iou[: row_start[1]]
        return picks[:1], kept[:1], cls[:1], ok, rows

    class Patched:
        soft_nms_merge, prepare = staticmethod(first_pick_only), jit.prepare

    args = (segments.astype(np.float64), scores.astype(np.float64), labels.astype(np.int64))
    assert nms._compiled(Patched, *args, config) is None
    monkeypatch.setattr(nms, "_JIT", [Patched])
    _assert_identical(fast_postprocess(*args, config), postprocess(*args, config))


def test_non_finite_input_takes_the_numpy_loop():
    segments = np.array([[0.0, 1.0], [0.5, np.inf], [0.2, 0.9]])
    scores, labels = np.array([0.9, 0.8, 0.7]), np.zeros(3, np.int64)
    config = PostprocessConfig()
    _assert_identical(
        fast_postprocess(segments, scores, labels, config),
        postprocess(segments, scores, labels, config),
    )


def test_other_methods_delegate():
    rng = np.random.default_rng(0)
    segments, scores = np.sort(rng.uniform(0, 9, (30, 2)), 1), rng.uniform(0, 1, 30)
    labels = rng.integers(0, 2, 30)
    for method in ("hard", "none"):
        config = PostprocessConfig(nms_method=method)
        _assert_identical(
            fast_postprocess(segments, scores, labels, config),
            postprocess(segments, scores, labels, config),
        )
