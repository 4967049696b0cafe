"""`core.compare`: the one definition of "the same detections" for two runs of a model."""

import numpy as np
import pytest

from pbd_deploy.core.compare import (
    SCORE_TOL,
    SEGMENT_TOL,
    assert_same_detections,
    assert_same_map,
    map_bounds,
    match_detections,
    match_predictions,
)
from pbd_deploy.core.metrics import THUMOS_THRESHOLDS, evaluate_detections
from pbd_deploy.core.postprocess import PostprocessConfig, detections_to_dicts, postprocess

CLASSES = ["a", "b", "c"]


def _candidates(seed, n=300, ties=100):
    """Candidates like a detector's, plus `ties` near-ties (5e-8 apart) across classes.

    Each tie copies a candidate to another class and a far-away segment, so the two do not
    interact in Soft-NMS; only their order depends on float noise.
    """
    rng = np.random.default_rng(seed)
    starts = rng.uniform(0, 60, n)
    segments = np.stack([starts, starts + rng.uniform(0.5, 8, n)], axis=1)
    scores, labels = rng.uniform(0.001, 0.05, n), rng.integers(3, size=n)
    pick = rng.choice(n, ties, replace=False)
    segments = np.concatenate([segments, segments[pick] + 100.0])
    return (
        segments,
        np.concatenate([scores, scores[pick] + 5e-8]),
        np.concatenate([labels, (labels[pick] + 1) % 3]),
    )


def _run(segments, scores, labels, config):
    return detections_to_dicts(*postprocess(segments, scores, labels, config), CLASSES)


def _det(label, start, end, score):
    return {"label": label, "segment": [start, end], "score": score}


def test_order_does_not_matter_and_every_field_is_checked():
    a = [_det("a", 0.0, 1.0, 0.9), _det("b", 2.0, 3.0, 0.5), _det("a", 4.0, 5.0, 0.1)]
    match = assert_same_detections(a, list(reversed(a)))
    assert sorted(match.pairs) == [(0, 2), (1, 1), (2, 0)]
    for changed, expect in (
        (_det("a", 0.0, 1.0, 0.9 + SCORE_TOL / 2), True),
        (_det("a", 0.0, 1.0, 0.9 + SCORE_TOL * 2), False),
        (_det("a", 0.0, 1.0 + SEGMENT_TOL / 2, 0.9), True),
        (_det("a", 0.0 - SEGMENT_TOL * 2, 1.0, 0.9), False),
        (_det("c", 0.0, 1.0, 0.9), False),
    ):
        assert match_detections(a, [changed, *a[1:]]).same is expect, changed
    # A long segment's bounds may move by SEGMENT_RTOL of its length (100 s: 0.01 s).
    long = [_det("a", 0.0, 100.0, 0.9)]
    assert match_detections(long, [_det("a", 0.005, 100.0, 0.9)]).same
    assert not match_detections(long, [_det("a", 0.02, 100.0, 0.9)]).same
    missing = match_detections(a, a[:2] + a[:1])  # a duplicate instead of the last one
    assert not missing.same and "a[2]" in missing.problems[0] and "b[2]" in missing.problems[1]
    assert not match_detections(a, a[:2], max_detections=2).same  # 0.1 is far below 0.5


def test_runtime_detections_and_tuples_are_read_too():
    from pbd_deploy.runtime.detector import Detection

    dicts = [_det("a", 1.0, 2.0, 0.5)]
    assert match_detections(dicts, [Detection(1.0, 2.0, "a", 0.5)]).same
    assert match_detections(dicts, [("a", (1.0, 2.0), 0.5)]).same


@pytest.mark.parametrize("seed", range(4))
def test_float_noise_reorders_soft_nms_output_but_not_the_detections(seed):
    """Like two backends: scores differing by ~1e-7 reorder near ties and swap the cut-off."""
    segments, scores, labels = _candidates(seed)
    noisy = scores + np.random.default_rng(100 + seed).normal(0, 1e-7, len(scores))
    config = PostprocessConfig(max_detections=100)
    a, b = _run(segments, scores, labels, config), _run(segments, noisy, labels, config)
    # The case this helper exists for: element-wise, the two runs differ.
    assert [d["label"] for d in a] != [d["label"] for d in b] or [d["segment"] for d in a] != [
        d["segment"] for d in b
    ]
    match = assert_same_detections(a, b, max_detections=config.max_detections)
    assert match.max_score_diff < 1e-6 and match.max_segment_diff == 0.0
    assert not match_predictions({"v": a}, {"v": b}).events  # the swaps were across classes
    # Without Soft-NMS, cut where the noise flips a near-tie: the two runs keep different
    # detections, accepted only while the other list is full and the score is at its lowest.
    order = np.argsort(-scores)
    cap = next(
        k + 1
        for k in range(20, len(order) - 1)
        if scores[order[k]] - scores[order[k + 1]] < 1e-7 and noisy[order[k]] < noisy[order[k + 1]]
    )
    flat = PostprocessConfig(max_detections=cap, nms_method="none")
    a, b = _run(segments, scores, labels, flat), _run(segments, noisy, labels, flat)
    match = assert_same_detections(a, b, max_detections=cap)
    assert len(match.only_a) == len(match.only_b) == 1
    lowest = min(d["score"] for d in b)
    assert abs(a[match.only_a[0]]["score"] - lowest) <= SCORE_TOL
    assert not match_detections(a, b[:-1], max_detections=cap).same  # b was not full


def test_an_unmatched_detection_above_the_cut_off_is_a_difference():
    segments, scores, labels = _candidates(0)
    config = PostprocessConfig(max_detections=50)
    a = _run(segments, scores, labels, config)
    b = [dict(d) for d in a]
    b[10] = _det(b[10]["label"], b[10]["segment"][0] + 0.5, b[10]["segment"][1], b[10]["score"])
    match = match_detections(a, b, max_detections=50)
    assert not match.same and len(match.problems) == 2
    with pytest.raises(AssertionError, match="not the same detections"):
        assert_same_detections(a, b)


def test_swapped_near_ties_bound_the_map_difference():
    gt = {"v": [_det("a", 0.0, 10.0, 1.0), _det("a", 20.0, 30.0, 1.0)]}
    tp, fp = _det("a", 0.0, 10.0, 0.5), _det("a", 40.0, 50.0, 0.5 - 1e-7)
    a = {"v": [tp, fp, _det("a", 20.0, 30.0, 0.1)]}
    b = {"v": [dict(tp, score=0.5 - 2e-7), fp, a["v"][2]]}  # the FP now ranks first
    ra, rb = (evaluate_detections(gt, p, THUMOS_THRESHOLDS) for p in (a, b))
    # Hand-computed: TP, FP, TP -> precision 1, 1/2, 2/3 -> AP 1/2 * 1 + 1/2 * 2/3;
    # FP, TP, TP -> precision 0, 1/2, 2/3, envelope 2/3 at both recalls -> AP 2/3.
    np.testing.assert_allclose(ra.mAP, 5 / 6)
    np.testing.assert_allclose(rb.mAP, 2 / 3)
    match = match_predictions(a, b)
    assert match.same and match.events == {"a": 1}
    per_class, overall = map_bounds(match, gt)
    assert per_class["a"] == pytest.approx(1e-6 + 2 / 2)
    assert_same_map(ra, rb, match, gt)
    # Without the swap there is no event and the bound is the float tolerance: a changed
    # result (another split's, say) is caught.
    same = match_predictions(a, a)
    assert not same.events and map_bounds(same, gt)[1] == pytest.approx(1e-6)
    with pytest.raises(AssertionError, match="AP of a differs"):
        assert_same_map(ra, rb, same, gt)


def test_map_of_noisy_runs_agrees_within_the_bound():
    """Many videos, float noise, cut-off exchanges: mAP stays within map_bounds."""
    config = PostprocessConfig(max_detections=60)
    a, b, gt = {}, {}, {}
    for seed in range(5):
        segments, scores, labels = _candidates(seed)
        noisy = scores + np.random.default_rng(seed).normal(0, 1e-7, len(scores))
        a[f"v{seed}"] = _run(segments, scores, labels, config)
        b[f"v{seed}"] = _run(segments, noisy, labels, config)
        pick = np.random.default_rng(seed).choice(len(scores), 12, replace=False)
        gt[f"v{seed}"] = [_det(CLASSES[labels[i]], *(segments[i] + 0.3), 1.0) for i in pick]
    match = match_predictions(a, b, max_detections=60)
    assert match.same
    ra, rb = (evaluate_detections(gt, p, THUMOS_THRESHOLDS) for p in (a, b))
    assert ra.average_mAP > 0.05  # not trivially zero
    assert_same_map(ra, rb, match, gt)
    assert not match_predictions(a, {**b, "v9": []}).same  # a video only one run has
