import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from pbd_deploy.core.metrics import (
    ACTIVITYNET_THRESHOLDS,
    THUMOS_THRESHOLDS,
    ClassSegments,
    average_precision,
    evaluate_detections,
    interpolated_ap,
    load_predictions,
    save_predictions,
    segment_iou,
)
from pbd_deploy.errors import PbdError

THUMOS_JSON = Path(__file__).resolve().parents[1] / "fixtures" / "thumos14.json"


# --- an independent, deliberately naive implementation of the protocol -------------------


def _py_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (b[1] - b[0]) + (a[1] - a[0]) - inter
    return inter / union


def reference_ap(gt_rows, pred_rows, threshold):
    """gt_rows: [(video, start, end)]; pred_rows: [(video, start, end, score)]."""
    gts_by_video = defaultdict(list)
    for gi, (video, s, e) in enumerate(gt_rows):
        gts_by_video[video].append((gi, (s, e)))
    ranked = sorted(pred_rows, key=lambda r: r[3], reverse=True)
    taken = set()
    hits = []
    for video, s, e, _ in ranked:
        options = sorted(
            ((_py_iou((s, e), seg), gi) for gi, seg in gts_by_video[video]), reverse=True
        )
        hit = False
        for iou, gi in options:
            if iou < threshold:
                break
            if gi in taken:
                continue
            taken.add(gi)
            hit = True
            break
        hits.append(hit)
    precisions = []
    tp = 0
    for k, hit in enumerate(hits, start=1):
        tp += hit
        precisions.append(tp / k)
    # Each true positive raises recall by 1/npos; the interpolated precision at that
    # recall level is the best precision reached at that rank or later.
    best_after = [0.0] * (len(precisions) + 1)
    for k in range(len(precisions) - 1, -1, -1):
        best_after[k] = max(precisions[k], best_after[k + 1])
    return sum(best_after[k] for k, hit in enumerate(hits) if hit) / len(gt_rows)


def reference_map(ground_truth, predictions, thresholds):
    gt_rows, pred_rows = defaultdict(list), defaultdict(list)
    for video, anns in ground_truth.items():
        for a in anns:
            gt_rows[a["label"]].append((video, *a["segment"]))
    for video, dets in predictions.items():
        for d in dets:
            pred_rows[d["label"]].append((video, *d["segment"], d["score"]))
    per_class = {
        label: [reference_ap(rows, pred_rows[label], t) for t in thresholds]
        for label, rows in gt_rows.items()
    }
    maps = [
        sum(ap[i] for ap in per_class.values()) / len(per_class) for i in range(len(thresholds))
    ]
    return maps, per_class


# --- THUMOS14 with perturbed predictions --------------------------------------------------


def _thumos():
    database = json.loads(THUMOS_JSON.read_text())["database"]
    test = {
        video: [{"label": a["label"], "segment": a["segment"]} for a in info["annotations"]]
        for video, info in database.items()
        if info["subset"] == "Test"
    }
    durations = {video: info["duration"] for video, info in database.items()}
    val_videos = sorted(v for v, info in database.items() if info["subset"] == "Validation")
    return test, durations, val_videos


def _perturbed_predictions(ground_truth, durations, val_videos, seed=0):
    rng = np.random.default_rng(seed)
    labels = sorted({a["label"] for anns in ground_truth.values() for a in anns})
    preds = defaultdict(list)
    for video, anns in ground_truth.items():
        for a in anns:
            if rng.random() < 0.15:
                continue  # missed instance
            start, end = a["segment"]
            length = end - start
            for _ in range(1 + int(rng.random() < 0.3)):  # sometimes a duplicate
                s = start + rng.normal(0, 0.25) * length
                e = end + rng.normal(0, 0.25) * length
                if e <= s:
                    e = s + 0.1
                preds[video].append({"label": a["label"], "segment": [s, e], "score": 0.0})
    test_videos = sorted(ground_truth)
    for _ in range(3000):
        pick = rng.random()
        if pick < 0.8:
            video = test_videos[rng.integers(len(test_videos))]
        elif pick < 0.95:
            video = val_videos[rng.integers(len(val_videos))]  # no GT in the Test subset
        else:
            video = f"not_a_video_{rng.integers(50)}"
        dur = durations.get(video, 100.0)
        s = rng.uniform(0, dur * 0.9)
        e = s + rng.uniform(0.2, 15.0)
        label = labels[rng.integers(len(labels))] if rng.random() < 0.97 else "UnknownAction"
        preds[video].append({"label": label, "segment": [s, e], "score": 0.0})
    all_dets = [d for dets in preds.values() for d in dets]
    # Continuous, distinct scores; true positives are not always ranked first.
    for d, score in zip(all_dets, rng.permutation(len(all_dets)) + rng.random(len(all_dets))):
        d["score"] = float(score) / len(all_dets)
    return dict(preds)


def test_thumos14_matches_independent_reference():
    ground_truth, durations, val_videos = _thumos()
    preds = _perturbed_predictions(ground_truth, durations, val_videos)
    scores = [d["score"] for dets in preds.values() for d in dets]
    assert len(set(scores)) == len(scores)
    result = evaluate_detections(ground_truth, preds, THUMOS_THRESHOLDS)
    want_map, want_per_class = reference_map(ground_truth, preds, THUMOS_THRESHOLDS)
    np.testing.assert_allclose(result.mAP, want_map, rtol=0, atol=1e-9)
    assert set(result.per_class) == set(want_per_class)
    for label, ap in want_per_class.items():
        np.testing.assert_allclose(result.per_class[label], ap, rtol=0, atol=1e-9)
    assert result.average_mAP == pytest.approx(np.mean(want_map), abs=1e-12)
    # The comparison is only meaningful if the numbers are neither trivial nor flat.
    assert 0.05 < result.mAP[-1] < result.mAP[0] < 0.95
    assert np.all(np.diff(result.mAP) < 0)


def test_thumos14_perfect_predictions_score_one():
    ground_truth, _, _ = _thumos()
    rng = np.random.default_rng(1)
    preds = {
        video: [dict(a, score=float(rng.random())) for a in anns]
        for video, anns in ground_truth.items()
    }
    result = evaluate_detections(ground_truth, preds, ACTIVITYNET_THRESHOLDS)
    np.testing.assert_array_equal(result.mAP, np.ones(10))
    assert result.average_mAP == 1.0


# --- hand-computed cases ------------------------------------------------------------------


def _det(label, s, e, score):
    return {"label": label, "segment": [s, e], "score": score}


def test_hand_computed_example():
    gt = {"v1": [{"label": "A", "segment": [0, 10]}, {"label": "A", "segment": [20, 30]}]}
    preds = {"v1": [_det("A", 0, 10, 0.9), _det("A", 40, 50, 0.8), _det("A", 21, 30, 0.7)]}
    # Ranked: TP (IoU 1), FP (no overlap), TP at IoU 0.9 with [20, 30].
    # precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    # Envelope: recall 1/2 -> max(1, 1/2, 2/3) = 1; recall 1 -> 2/3.
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6 at tIoU <= 0.9.
    # At 0.95 the third is a miss: AP = 1/2 * 1 = 1/2.
    result = evaluate_detections(gt, preds, (0.5, 0.9, 0.95))
    np.testing.assert_allclose(result.mAP, [5 / 6, 5 / 6, 0.5], atol=1e-12)
    assert result.average_mAP == pytest.approx((5 / 6 + 5 / 6 + 0.5) / 3)


def test_duplicates_are_false_positives():
    gt = {"v1": [{"label": "A", "segment": [0, 10]}, {"label": "A", "segment": [20, 30]}]}
    preds = {"v1": [_det("A", 0, 10, 0.9), _det("A", 0, 10, 0.8), _det("A", 20, 30, 0.7)]}
    # TP, duplicate FP, TP: same ranks as the hand example, AP = 5/6.
    result = evaluate_detections(gt, preds, (0.5,))
    assert result.mAP[0] == pytest.approx(5 / 6, abs=1e-12)


def test_locked_gt_falls_through_to_next_best():
    gt = {"v1": [{"label": "A", "segment": [0, 10]}, {"label": "A", "segment": [8, 20]}]}
    # The second prediction's best GT ([0, 10], IoU 9/11) is taken; its next best is
    # [8, 20] at IoU 3/19 ~ 0.158: a TP at tIoU 0.1, an FP at 0.5.
    preds = {"v1": [_det("A", 0, 10, 0.9), _det("A", 1, 11, 0.8)]}
    result = evaluate_detections(gt, preds, (0.1, 0.5))
    np.testing.assert_allclose(result.mAP, [1.0, 0.5], atol=1e-12)


def test_predictions_for_videos_without_gt_are_false_positives():
    gt = {"v1": [{"label": "A", "segment": [0, 10]}]}
    preds = {"ghost": [_det("A", 0, 10, 0.9)], "v1": [_det("A", 0, 10, 0.8)]}
    # FP then TP: precision 1/2 at recall 1.
    assert evaluate_detections(gt, preds, (0.5,)).mAP[0] == pytest.approx(0.5)


def test_video_with_gt_of_another_class_only_is_false_positive():
    gt = {"v1": [{"label": "A", "segment": [0, 10]}], "v2": [{"label": "B", "segment": [0, 5]}]}
    preds = {"v2": [_det("A", 0, 5, 0.9)], "v1": [_det("A", 0, 10, 0.8), _det("B", 0, 5, 0.7)]}
    result = evaluate_detections(gt, preds, (0.5,))
    assert result.per_class["A"][0] == pytest.approx(0.5)
    assert result.per_class["B"][0] == pytest.approx(0.0)


def test_class_without_predictions_has_zero_ap_and_unknown_labels_ignored():
    gt = {"v1": [{"label": "A", "segment": [0, 10]}, {"label": "B", "segment": [20, 30]}]}
    preds = {"v1": [_det("A", 0, 10, 0.9), _det("Z", 20, 30, 0.95)]}
    result = evaluate_detections(gt, preds, THUMOS_THRESHOLDS)
    np.testing.assert_array_equal(result.per_class["A"], np.ones(5))
    np.testing.assert_array_equal(result.per_class["B"], np.zeros(5))
    np.testing.assert_allclose(result.mAP, np.full(5, 0.5))
    assert "Z" not in result.per_class


def test_to_json_is_plain():
    gt = {"v1": [{"label": "A", "segment": [0, 10]}]}
    result = evaluate_detections(gt, {"v1": [_det("A", 0, 10, 0.9)]}, (0.3, 0.5))
    out = json.loads(json.dumps(result.to_json()))
    assert out == {
        "thresholds": [0.3, 0.5],
        "mAP": [1.0, 1.0],
        "average_mAP": 1.0,
        "per_class": {"A": [1.0, 1.0]},
    }


def test_evaluate_rejects_bad_input():
    with pytest.raises(PbdError, match="no annotations"):
        evaluate_detections({}, {}, (0.5,))
    gt = {"v1": [{"label": "A", "segment": [0, 10]}]}
    with pytest.raises(PbdError, match="score"):
        evaluate_detections(gt, {"v1": [{"label": "A", "segment": [0, 1]}]}, (0.5,))


# --- building blocks ----------------------------------------------------------------------


def test_segment_iou():
    got = segment_iou([0, 10], np.array([[5, 15], [10, 20], [0, 10], [20, 30], [2, 4]]))
    np.testing.assert_allclose(got, [5 / 15, 0, 1, 0, 0.2])
    assert segment_iou([3, 3], np.array([[5, 5]]))[0] == 0.0


def test_interpolated_ap():
    assert interpolated_ap([1, 0.5, 2 / 3], [0.5, 0.5, 1]) == pytest.approx(5 / 6)
    assert interpolated_ap([1.0], [0.5]) == pytest.approx(0.5)
    # A dip then recovery: precision at recall 1/3 is lifted to 3/4 by the envelope.
    assert interpolated_ap([0.5, 2 / 3, 3 / 4], [1 / 3, 2 / 3, 1]) == pytest.approx(0.75)


def test_average_precision_arrays():
    gt = ClassSegments(np.array([0, 0, 1]), np.array([[0, 10], [20, 30], [0, 5]]))
    preds = ClassSegments(
        np.array([1, 0, 0, 2]),
        np.array([[0, 5], [0, 10], [20, 29], [0, 5]]),
        np.array([0.7, 0.9, 0.8, 0.95]),
    )
    # Ranked: video 2 (no GT) FP, TP, TP (IoU 0.9), TP. precision 0, 1/2, 2/3, 3/4.
    # AP = 1/3 * (3/4 + 3/4 + 3/4) = 3/4 at 0.5; at 0.95 [20, 29] misses:
    # hits at ranks 2 and 4 -> 1/3 * (2/4 + 2/4) = 1/3.
    np.testing.assert_allclose(average_precision(gt, preds, (0.5, 0.95)), [0.75, 1 / 3])
    empty = ClassSegments(np.zeros(0, dtype=int), np.zeros((0, 2)), np.zeros(0))
    np.testing.assert_array_equal(average_precision(gt, empty, (0.5,)), [0.0])
    with pytest.raises(PbdError):
        ClassSegments(np.array([0]), np.zeros((2, 2)))


# --- results file I/O ---------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    preds = {
        "v1": [_det("A", np.float32(0.5), 10, np.float64(0.9)), _det("B", 1, 2.25, 0.1)],
        "v2": [],
    }
    path = tmp_path / "results.json"
    save_predictions(preds, path)
    assert not (tmp_path / "results.json.tmp").exists()
    raw = json.loads(path.read_text())
    assert set(raw) == {"version", "results", "external_data"}
    loaded = load_predictions(path)
    assert loaded == {
        "v1": [
            {"label": "A", "segment": [0.5, 10.0], "score": pytest.approx(0.9)},
            {"label": "B", "segment": [1.0, 2.25], "score": 0.1},
        ],
        "v2": [],
    }
    save_predictions(loaded, path)
    assert load_predictions(path) == loaded


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ('{"version": "1.3"}', "results"),
        ('{"results": []}', "results"),
        ('{"results": {"v": {"label": "A"}}}', "list"),
        ('{"results": {"v": [{"score": 0.5, "segment": [0, 1]}]}}', "label"),
        ('{"results": {"v": [{"label": "A", "segment": [0, 1]}]}}', "score"),
        ('{"results": {"v": [{"label": "A", "score": 0.5}]}}', "segment"),
        ('{"results": {"v": [{"label": "A", "score": 0.5, "segment": ["0", 1]}]}}', "segment"),
        ('{"results": {"v": [{"label": "A", "score": 0.5, "segment": [0, 1, 2]}]}}', "segment"),
        ('{"results": {"v": [{"label": "A", "score": true, "segment": [0, 1]}]}}', "score"),
    ],
)
def test_load_rejects_malformed(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PbdError, match=match):
        load_predictions(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(PbdError, match="not found"):
        load_predictions(tmp_path / "nope.json")


def test_save_rejects_bad_entries(tmp_path):
    path = tmp_path / "out.json"
    with pytest.raises(PbdError, match="score"):
        save_predictions({"v": [_det("A", 0, 1, float("nan"))]}, path)
    assert not path.exists()
