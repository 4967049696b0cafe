import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pbd_deploy.core.postprocess import (
    PostprocessConfig,
    detections_to_dicts,
    hard_nms,
    postprocess,
    select_topk,
    soft_nms,
)
from pbd_deploy.errors import PbdError


def _py_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)


def naive_soft_nms(segments, scores, labels, sigma, iou_threshold, min_score, method):
    """Textbook Soft-NMS on Python lists, one class at a time."""
    out = []
    for cls in sorted(set(labels)):
        pool = [
            [tuple(seg), sc]
            for seg, sc, lab in zip(segments, scores, labels)
            if lab == cls and sc >= min_score
        ]
        while pool:
            best = max(pool, key=lambda d: d[1])
            pool.remove(best)
            out.append((best[0], best[1], cls))
            for d in pool:
                iou = _py_iou(best[0], d[0])
                if method == "gaussian":
                    d[1] *= math.exp(-iou * iou / sigma)
                elif iou > iou_threshold:
                    d[1] *= 1 - iou
            pool = [d for d in pool if d[1] >= min_score]
    out.sort(key=lambda d: -d[1])
    return out


def _random_detections(seed, n=80, classes=3):
    rng = np.random.default_rng(seed)
    centers = rng.choice([10.0, 30.0, 50.0], size=n) + rng.normal(0, 3, size=n)
    lengths = rng.uniform(2, 12, size=n)
    segments = np.stack([centers - lengths / 2, centers + lengths / 2], axis=1)
    return segments, rng.random(n), rng.integers(classes, size=n)


@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_nms_matches_naive_loop(method, seed):
    segments, scores, labels = _random_detections(seed)
    args = dict(sigma=0.5, iou_threshold=0.3, min_score=0.05, method=method)
    segs, sc, lab = soft_nms(segments, scores, labels, **args)
    want = naive_soft_nms(segments.tolist(), scores.tolist(), labels.tolist(), **args)
    assert len(sc) == len(want) > 0
    np.testing.assert_allclose(sc, [d[1] for d in want], rtol=0, atol=1e-12)
    np.testing.assert_allclose(segs, [d[0] for d in want], rtol=0, atol=0)
    np.testing.assert_array_equal(lab, [d[2] for d in want])
    # Some scores must actually have been decayed, or the test proves little.
    assert not set(sc.tolist()) <= set(scores.tolist())


def test_soft_nms_drops_below_min_score():
    segments = np.array([[0.0, 10.0], [0.0, 10.0], [50.0, 60.0]])
    scores = np.array([0.9, 0.8, 0.0005])
    segs, sc, lab = soft_nms(segments, scores, [0, 0, 0], 0.5, 0.1, 0.001, "gaussian")
    # The duplicate decays by exp(-1 / 0.5) and survives; the low scorer never qualifies.
    np.testing.assert_allclose(sc, [0.9, 0.8 * math.exp(-2)])
    segs, sc, lab = soft_nms(segments, scores, [0, 0, 0], 0.5, 0.1, 0.2, "gaussian")
    np.testing.assert_allclose(sc, [0.9])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hard_nms_keeps_no_overlapping_same_class_pair(seed):
    segments, scores, labels = _random_detections(seed, n=150)
    thr = 0.3
    segs, sc, lab = hard_nms(segments, scores, labels, thr)
    assert 0 < len(sc) < len(scores)
    assert np.all(np.diff(sc) <= 0)
    for i in range(len(sc)):
        for j in range(i + 1, len(sc)):
            if lab[i] == lab[j]:
                assert _py_iou(segs[i], segs[j]) <= thr
    # Greedy: every dropped detection overlaps a kept, better one of its class.
    kept = set(zip(map(tuple, segs.tolist()), sc.tolist()))
    for seg, s, c in zip(segments.tolist(), scores.tolist(), labels.tolist()):
        if (tuple(seg), s) not in kept:
            assert any(
                lab[k] == c and sc[k] > s and _py_iou(segs[k], seg) > thr for k in range(len(sc))
            )


def test_classes_do_not_suppress_each_other():
    segments = np.array([[0.0, 10.0], [0.0, 10.0], [0.5, 10.0]])
    scores = np.array([0.9, 0.8, 0.7])
    labels = np.array([0, 1, 2])
    segs, sc, lab = hard_nms(segments, scores, labels, 0.1)
    np.testing.assert_array_equal(lab, [0, 1, 2])
    segs, sc, lab = soft_nms(segments, scores, labels, 0.5, 0.1, 0.001, "gaussian")
    np.testing.assert_allclose(sc, scores)
    # Same input, one class: the copies are suppressed or decayed.
    assert len(hard_nms(segments, scores, [0, 0, 0], 0.1)[1]) == 1
    assert soft_nms(segments, scores, [0, 0, 0], 0.5, 0.1, 0.001, "gaussian")[1][1] < 0.8


@pytest.mark.parametrize("method", ["soft", "hard", "none"])
def test_postprocess_respects_max_detections(method):
    segments, scores, labels = _random_detections(5, n=100)
    config = PostprocessConfig(nms_method=method, max_detections=7, iou_threshold=0.9)
    segs, sc, lab = postprocess(segments, scores, labels, config)
    assert len(segs) == len(sc) == len(lab) == 7
    assert np.all(np.diff(sc) <= 0)
    if method == "none":
        np.testing.assert_allclose(sc, np.sort(scores)[::-1][:7])


def test_postprocess_empty_input():
    for method in ("soft", "hard", "none"):
        segs, sc, lab = postprocess(np.zeros((0, 2)), [], [], PostprocessConfig(nms_method=method))
        assert segs.shape == (0, 2) and sc.shape == (0,) and lab.shape == (0,)


def test_select_topk_threshold_topk_and_degenerate():
    scores = np.array(
        [
            [0.9, 0.0005, 0.2],
            [0.3, 0.8, 0.001],  # 0.001 is not above the 0.001 threshold
            [0.95, 0.5, 0.4],  # degenerate segment: dropped
            [0.1, 0.6, 0.7],
        ]
    )
    segments = np.array([[0.0, 1.0], [1.0, 2.0], [3.0, 3.0], [4.0, 6.0]])
    segs, sc, lab = select_topk(scores, segments, PostprocessConfig(pre_nms_topk=100))
    np.testing.assert_allclose(sc, [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1])
    np.testing.assert_array_equal(lab, [0, 1, 2, 1, 0, 2, 0])
    np.testing.assert_allclose(segs[:4], [[0, 1], [1, 2], [4, 6], [4, 6]])
    # Top-k applies before degenerate segments are removed: 0.95 takes one of the 3 slots.
    segs, sc, lab = select_topk(scores, segments, PostprocessConfig(pre_nms_topk=3))
    np.testing.assert_allclose(sc, [0.9, 0.8])
    segs, sc, lab = select_topk(
        scores, segments, PostprocessConfig(pre_nms_thresh=0.65, pre_nms_topk=100)
    )
    np.testing.assert_allclose(sc, [0.9, 0.8, 0.7])
    with pytest.raises(PbdError, match="segments"):
        select_topk(scores, segments[:3], PostprocessConfig())


def test_config_round_trip_and_validation():
    config = PostprocessConfig(nms_method="hard", sigma=0.9, max_detections=50)
    assert PostprocessConfig.from_dict(config.to_dict()) == config
    assert PostprocessConfig.from_dict({}) == PostprocessConfig()
    for bad in (
        {"nms_method": "fast"},
        {"soft_method": "cubic"},
        {"sigma": 0},
        {"iou_threshold": 1.5},
        {"pre_nms_topk": 0},
        {"max_detections": 2.5},
        {"min_score": -0.1},
    ):
        with pytest.raises(PbdError):
            PostprocessConfig(**bad)
    with pytest.raises(PbdError, match="unknown"):
        PostprocessConfig.from_dict({"topk": 3})


def test_detections_to_dicts():
    out = detections_to_dicts(
        np.array([[1.0, 2.5]], dtype=np.float32), np.array([0.75]), np.array([1]), ["A", "B"]
    )
    assert out == [{"label": "B", "segment": [1.0, 2.5], "score": 0.75}]
    assert all(type(v) is float for v in out[0]["segment"] + [out[0]["score"]])
    with pytest.raises(PbdError, match="class names"):
        detections_to_dicts(np.zeros((1, 2)), [0.5], [2], ["A", "B"])


def test_eval_modules_do_not_import_torch():
    # The torch-free runtime reuses these modules.
    code = (
        "import sys, pbd_deploy.core.metrics, pbd_deploy.core.postprocess; "
        "sys.exit('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
