"""Detection mAP at temporal IoU thresholds, following the ActivityNet detection protocol.

The matching and AP integration reproduce ANETdetection's
``compute_average_precision_detection`` so that numbers are comparable with published
results. Numpy only: the torch-free runtime imports this module.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pbd_deploy.core.atomic import write_file
from pbd_deploy.errors import PbdError

logger = logging.getLogger(__name__)

THUMOS_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
# Rounded so that 0.55 is 0.55 and not 0.5500000000000001 from repeated float additions.
ACTIVITYNET_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def check_thresholds(values: Any, where: str = "") -> tuple[float, ...]:
    """A model's tIoU thresholds as a tuple; one line naming `where` if not all in (0, 1]."""
    ok = isinstance(values, (list, tuple)) and len(values) > 0
    ok = ok and all(_is_number(v) and 0 < v <= 1 for v in values)
    if not ok:
        raise PbdError(
            f"tIoU thresholds{' in ' + where if where else ''} must be a non-empty list of "
            f"numbers in (0, 1], got {values!r}"
        )
    return tuple(float(v) for v in values)


def segment_iou(segment: Sequence[float] | np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Temporal IoU between one segment and many.

    Args:
        segment: ``(2,)`` start and end.
        segments: ``(N, 2)`` starts and ends.

    Returns:
        ``(N,)`` float64 IoU values. Two zero-length segments give 0 (the reference
        implementation gives NaN there, which would then match at every threshold).
    """
    segment = np.asarray(segment, dtype=np.float64).reshape(2)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    return _pairwise_iou(segment[None, :], segments)[0]


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(P, 2)`` x ``(G, 2)`` -> ``(P, G)`` IoU, same float operations as the reference."""
    start = np.maximum(a[:, None, 0], b[None, :, 0])
    end = np.minimum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(end - start, 0, None)
    union = (b[None, :, 1] - b[None, :, 0]) + (a[:, None, 1] - a[:, None, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the interpolated precision envelope, as ActivityNet computes it.

    Args:
        precision: precision after each ranked prediction.
        recall: recall after each ranked prediction (non-decreasing).

    Returns:
        The average precision in ``[0, 1]``.
    """
    prec = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64).ravel(), [0.0]])
    rec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64).ravel(), [1.0]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    steps = np.flatnonzero(rec[1:] != rec[:-1]) + 1
    return float(np.sum((rec[steps] - rec[steps - 1]) * prec[steps]))


@dataclass(frozen=True)
class ClassSegments:
    """All segments of one class, flattened across videos for vectorized matching.

    Attributes:
        videos: ``(N,)`` video identifiers (ints or strings) of each segment.
        segments: ``(N, 2)`` start and end in seconds.
        scores: ``(N,)`` confidences for predictions; ``None`` for ground truth.
    """

    videos: np.ndarray
    segments: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        videos = np.asarray(self.videos).reshape(-1)
        segments = np.asarray(self.segments, dtype=np.float64).reshape(-1, 2)
        if len(videos) != len(segments):
            raise PbdError(
                f"{len(videos)} video ids for {len(segments)} segments; pass one id per segment"
            )
        object.__setattr__(self, "videos", videos)
        object.__setattr__(self, "segments", segments)
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            if len(scores) != len(segments):
                raise PbdError(
                    f"{len(scores)} scores for {len(segments)} segments; pass one score each"
                )
            object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.segments)


def average_precision(
    gt: ClassSegments, preds: ClassSegments, thresholds: Sequence[float]
) -> np.ndarray:
    """AP of one class at each tIoU threshold (ActivityNet greedy matching).

    Args:
        gt: ground-truth segments of the class.
        preds: predicted segments of the class, with scores.
        thresholds: tIoU thresholds.

    Returns:
        ``(len(thresholds),)`` AP values; all zero when there are no predictions or no
        ground truth.
    """
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if len(preds) == 0 or len(gt) == 0 or thr.size == 0:
        return np.zeros(thr.size)
    if preds.scores is None:
        raise PbdError("predictions need scores to be ranked; pass scores to ClassSegments")
    # Stable ascending then reversed, like the reference's argsort()[::-1] on small inputs.
    order = np.argsort(preds.scores, kind="stable")[::-1]
    candidates = _candidates(gt, preds, order, float(thr.min()))
    tp = _greedy_match(candidates, len(gt), thr.tolist())
    tp_cum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_cum = np.cumsum(~tp, axis=1, dtype=np.float64)
    recall = tp_cum / len(gt)
    precision = tp_cum / (tp_cum + fp_cum)
    return np.array([interpolated_ap(precision[t], recall[t]) for t in range(thr.size)])


def _group(codes: np.ndarray) -> dict[int, np.ndarray]:
    """Indices of each distinct code, in increasing index order."""
    order = np.argsort(codes, kind="stable")
    uniq, starts = np.unique(codes[order], return_index=True)
    return dict(zip(uniq.tolist(), np.split(order, starts[1:])))


def _candidates(
    gt: ClassSegments, preds: ClassSegments, order: np.ndarray, min_thr: float
) -> list[list[tuple[int, float]]]:
    """For each ranked prediction, (gt index, tIoU) pairs by decreasing tIoU.

    Pairs below the smallest threshold are dropped: the reference stops at the first GT
    below the threshold anyway, so they can never be matched.
    """
    _, codes = np.unique(np.concatenate([gt.videos, preds.videos]), return_inverse=True)
    codes = codes.reshape(-1)
    gt_groups = _group(codes[: len(gt)])
    pred_groups = _group(codes[len(gt) :][order])
    pred_segments = preds.segments[order]
    out: list[list[tuple[int, float]]] = [[] for _ in range(len(order))]
    for code, p_idx in pred_groups.items():
        g_idx = gt_groups.get(code)
        if g_idx is None:
            continue  # no GT of this class in the video: false positive at every threshold
        iou = _pairwise_iou(pred_segments[p_idx], gt.segments[g_idx])
        rank = np.argsort(iou, axis=1, kind="stable")[:, ::-1]
        ranked_iou = np.take_along_axis(iou, rank, axis=1)
        counts = (ranked_iou >= min_thr).sum(axis=1)
        for row in np.flatnonzero(counts):
            c = counts[row]
            out[p_idx[row]] = list(zip(g_idx[rank[row, :c]].tolist(), ranked_iou[row, :c].tolist()))
    return out


def _greedy_match(
    candidates: list[list[tuple[int, float]]], n_gt: int, thresholds: list[float]
) -> np.ndarray:
    """``(T, P)`` true-positive flags; each GT is locked by its first match per threshold."""
    tp = np.zeros((len(thresholds), len(candidates)), dtype=bool)
    locked = [bytearray(n_gt) for _ in thresholds]
    # Plain Python on short lists beats small numpy calls in this sequential loop.
    for p, cands in enumerate(candidates):
        if not cands:
            continue
        for t, (thr, lock) in enumerate(zip(thresholds, locked)):
            for g, iou in cands:
                if iou < thr:
                    break
                if lock[g]:
                    continue
                lock[g] = 1
                tp[t, p] = True
                break
    return tp


@dataclass
class DetectionResult:
    """mAP of a detection run.

    Attributes:
        thresholds: tIoU thresholds.
        mAP: ``(T,)`` mean AP over classes at each threshold, fractions in ``[0, 1]``.
        average_mAP: mean of ``mAP`` over thresholds.
        per_class: label -> ``(T,)`` AP.
    """

    thresholds: tuple[float, ...]
    mAP: np.ndarray
    average_mAP: float
    per_class: dict[str, np.ndarray]

    def to_json(self) -> dict[str, Any]:
        """Plain-Python dict for ``json.dump``."""
        return {
            "thresholds": [float(t) for t in self.thresholds],
            "mAP": [float(v) for v in self.mAP],
            "average_mAP": float(self.average_mAP),
            "per_class": {k: [float(v) for v in ap] for k, ap in self.per_class.items()},
        }


def evaluate_detections(
    ground_truth: Mapping[str, Sequence[Mapping[str, Any]]],
    predictions: Mapping[str, Sequence[Mapping[str, Any]]],
    thresholds: Sequence[float],
) -> DetectionResult:
    """mAP of predictions against ground truth, ActivityNet protocol.

    Args:
        ground_truth: video id -> ``[{"label": str, "segment": [start, end]}]``.
        predictions: video id -> ``[{"label", "segment", "score"}]``. Labels absent from
            the ground truth are ignored; videos absent from it count as false positives.
        thresholds: tIoU thresholds, e.g. ``THUMOS_THRESHOLDS``.

    Returns:
        The per-threshold, averaged and per-class results.
    """
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds:
        raise PbdError("no tIoU thresholds given; pass e.g. THUMOS_THRESHOLDS")
    gt_by_class = _collect(ground_truth, "ground truth", with_score=False)
    if not gt_by_class:
        raise PbdError("the ground truth has no annotations; check the subset and the file")
    pred_by_class = _collect(predictions, "predictions", with_score=True)
    ignored = sorted(set(pred_by_class) - set(gt_by_class))
    if ignored:
        logger.info("ignoring predictions of %d labels absent from the ground truth", len(ignored))
    per_class = {}
    for label in sorted(gt_by_class):
        gt = _to_class_segments(gt_by_class[label])
        preds = _to_class_segments(pred_by_class.get(label, []))
        per_class[label] = average_precision(gt, preds, thresholds)
    mean_ap = np.mean(np.stack(list(per_class.values())), axis=0)
    return DetectionResult(thresholds, mean_ap, float(np.mean(mean_ap)), per_class)


def _collect(
    detections: Mapping[str, Sequence[Mapping[str, Any]]], what: str, with_score: bool
) -> dict[str, list[tuple[str, float, float, float]]]:
    """Group entries by label as (video, start, end, score) rows, validating each."""
    by_class: dict[str, list[tuple[str, float, float, float]]] = {}
    for video, entries in detections.items():
        for i, entry in enumerate(entries):
            label, (start, end), score = _parse_entry(entry, f"{what}[{video!r}][{i}]", with_score)
            by_class.setdefault(label, []).append((video, start, end, score))
    return by_class


def _to_class_segments(rows: list[tuple[str, float, float, float]]) -> ClassSegments:
    if not rows:
        return ClassSegments(np.zeros(0, dtype=str), np.zeros((0, 2)), np.zeros(0))
    videos, starts, ends, scores = zip(*rows)
    return ClassSegments(np.array(videos), np.stack([starts, ends], axis=1), np.array(scores))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _parse_entry(
    entry: Any, where: str, with_score: bool
) -> tuple[str, tuple[float, float], float]:
    """Validated (label, (start, end), score); score is 1.0 when not required."""
    if not isinstance(entry, Mapping):
        raise PbdError(f"{where}: expected an object with label and segment, got {entry!r}")
    keys = ("label", "segment", "score") if with_score else ("label", "segment")
    for key in keys:
        if key not in entry:
            raise PbdError(f"{where}: missing {key!r}; every entry needs {', '.join(keys)}")
    label = entry["label"]
    if not isinstance(label, str):
        raise PbdError(f"{where}: label must be a string class name, got {label!r}")
    seg = entry["segment"]
    if (
        not isinstance(seg, (list, tuple, np.ndarray))
        or len(seg) != 2
        or not all(_is_number(x) and math.isfinite(x) for x in seg)
    ):
        raise PbdError(f"{where}: segment must be [start, end] in seconds, got {seg!r}")
    score = entry["score"] if with_score else 1.0
    if not (_is_number(score) and math.isfinite(score)):
        raise PbdError(f"{where}: score must be a finite number, got {score!r}")
    return label, (float(seg[0]), float(seg[1])), float(score)


def load_predictions(
    path: str | os.PathLike,
    class_names: Collection[str] | None = None,
    video_ids: Collection[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Read and check an ActivityNet-style results file (see `check_predictions`).

    Args:
        path: JSON file ``{"version", "results": {video: [{label, score, segment}]},
            "external_data"}``.
        class_names, video_ids: those of the annotations; others are refused.

    Returns:
        video id -> ``[{"label": str, "segment": [float, float], "score": float}]``.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise PbdError(f"predictions file {path} not found; check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PbdError(f"predictions file {path} is not valid JSON ({e}); regenerate it") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise PbdError(
            f"predictions file {path} has no 'results' object; expected the ActivityNet format"
        )
    results = _normalize(data["results"], f"{path}: results")
    check_predictions(results, f"{path}: results", class_names, video_ids)
    return results


def check_predictions(
    predictions: Mapping[str, Sequence[Mapping[str, Any]]],
    where: str,
    class_names: Collection[str] | None = None,
    video_ids: Collection[str] | None = None,
) -> None:
    """Refuse what no detector outputs: start >= end, a score outside [0, 1], and (when
    given) a label or video id the annotations do not have."""
    for video, rows in predictions.items():
        if video_ids is not None and video not in video_ids:
            raise PbdError(
                f"{where}: video {video!r} is not in the annotations; use their video ids"
            )
        for i, row in enumerate(rows):
            at = f"{where}[{video!r}][{i}]"
            (start, end), score, label = row["segment"], row["score"], row["label"]
            if not start < end:
                raise PbdError(f"{at}: segment start {start} is not before its end {end}")
            if not 0.0 <= score <= 1.0:
                raise PbdError(f"{at}: score {score} is not a probability in [0, 1]")
            if class_names is not None and label not in class_names:
                raise PbdError(
                    f"{at}: label {label!r} is not a class of the annotations "
                    f"({', '.join(sorted(class_names))})"
                )


def _normalize(results: Mapping[str, Any], where: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for video, entries in results.items():
        if not isinstance(entries, (list, tuple)):
            raise PbdError(f"{where}[{video!r}] must be a list of detections, got {entries!r}")
        rows = []
        for i, entry in enumerate(entries):
            label, seg, score = _parse_entry(entry, f"{where}[{video!r}][{i}]", with_score=True)
            rows.append({"label": label, "segment": list(seg), "score": score})
        out[str(video)] = rows
    return out


def save_predictions(
    predictions: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    version: str = "VERSION 1.3",
    external_data: Mapping[str, Any] | None = None,
) -> None:
    """Write predictions as an ActivityNet-style results file, atomically.

    Args:
        predictions: video id -> ``[{"label", "segment", "score"}]``.
        path: destination JSON file.
        version: the file's ``version`` field.
        external_data: the file's ``external_data`` field; defaults to "not used".
    """
    path = os.fspath(path)
    payload = {
        "version": version,
        "results": _normalize(predictions, "predictions"),
        "external_data": dict(external_data) if external_data else {"used": False, "details": ""},
    }
    write_file(path, json.dumps(payload), what="predictions ")
