"""Turn per-point class probabilities and regressed segments into final detections.

Numpy only: the torch-free runtime imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pbd_deploy.core import config as config_io
from pbd_deploy.core.metrics import segment_iou
from pbd_deploy.errors import PbdError

NMS_METHODS = ("soft", "hard", "none")
SOFT_METHODS = ("gaussian", "linear")

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class PostprocessConfig:
    """How raw outputs become detections.

    Attributes:
        pre_nms_topk: candidates kept (by score) before NMS.
        pre_nms_thresh: candidates must score above this.
        nms_method: "soft", "hard" or "none".
        iou_threshold: hard NMS suppresses above it; linear Soft-NMS decays above it.
        sigma: gaussian Soft-NMS width, ``score *= exp(-iou**2 / sigma)``.
        min_score: Soft-NMS drops detections whose decayed score falls below it.
        max_detections: detections kept per video after NMS.
        soft_method: "gaussian" or "linear" Soft-NMS.
    """

    pre_nms_topk: int = 2000
    pre_nms_thresh: float = 0.001
    nms_method: str = "soft"
    iou_threshold: float = 0.1
    sigma: float = 0.5
    min_score: float = 0.001
    max_detections: int = 200
    soft_method: str = "gaussian"

    def __post_init__(self) -> None:
        for name in ("pre_nms_topk", "max_detections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PbdError(f"postprocess {name} must be a positive integer, got {value!r}")
        if self.nms_method not in NMS_METHODS:
            raise PbdError(f"nms_method {self.nms_method!r} unknown; use one of {NMS_METHODS}")
        if self.soft_method not in SOFT_METHODS:
            raise PbdError(f"soft_method {self.soft_method!r} unknown; use one of {SOFT_METHODS}")
        self._check_range("pre_nms_thresh", 0.0, 1.0)
        self._check_range("iou_threshold", 0.0, 1.0)
        self._check_range("min_score", 0.0, 1.0)
        if not _is_real(self.sigma) or not self.sigma > 0:
            raise PbdError(f"postprocess sigma must be a positive number, got {self.sigma!r}")

    def _check_range(self, name: str, low: float, high: float) -> None:
        value = getattr(self, name)
        if not _is_real(value) or not low <= value <= high:
            raise PbdError(f"postprocess {name} must be in [{low}, {high}], got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "") -> PostprocessConfig:
        """Build from ``to_dict`` output; missing keys take defaults, unknown ones are refused."""
        return config_io.from_dict(cls, data, where)


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _as_detections(segments: Any, scores: Any, labels: Any) -> Detections:
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if not len(segments) == len(scores) == len(labels):
        raise PbdError(
            f"{len(segments)} segments, {len(scores)} scores, {len(labels)} labels; "
            "pass one of each per detection"
        )
    return segments, scores, labels


def _sorted(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> Detections:
    order = np.argsort(-scores, kind="stable")
    return segments[order], scores[order], labels[order]


def select_topk(scores: np.ndarray, segments: np.ndarray, config: PostprocessConfig) -> Detections:
    """Candidate (point, class) pairs before NMS.

    Args:
        scores: ``(N, K)`` class probabilities per point.
        segments: ``(N, 2)`` segment regressed at each point, in seconds.
        config: thresholds and top-k.

    Returns:
        ``(segments (M, 2), scores (M,), labels (M,))`` sorted by score, descending.
    """
    scores = np.asarray(scores, dtype=np.float64)
    segments = np.asarray(segments, dtype=np.float64)
    if scores.ndim != 2 or segments.shape != (scores.shape[0], 2):
        raise PbdError(
            f"expected scores (N, K) and segments (N, 2), got {scores.shape} and "
            f"{segments.shape}; check the model outputs"
        )
    flat = scores.ravel()
    idx = np.flatnonzero(flat > config.pre_nms_thresh)
    idx = idx[np.argsort(-flat[idx], kind="stable")[: config.pre_nms_topk]]
    points, labels = np.divmod(idx, scores.shape[1])
    segs = segments[points]
    # Zero or negative length segments come from untrained or clipped regressions.
    keep = segs[:, 1] > segs[:, 0]
    return segs[keep], flat[idx][keep], labels[keep].astype(np.int64)


def _per_class(labels: np.ndarray, run_one) -> tuple[np.ndarray, np.ndarray]:
    """Run ``run_one(indices) -> (kept indices, kept scores)`` on each class separately."""
    kept, kept_scores = [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
    for label in np.unique(labels):
        idx, sc = run_one(np.flatnonzero(labels == label))
        kept.append(idx)
        kept_scores.append(sc)
    return np.concatenate(kept), np.concatenate(kept_scores)


def hard_nms(
    segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float
) -> Detections:
    """Greedy per-class NMS: drop a detection overlapping a better one by IoU > threshold.

    Returns:
        Kept ``(segments, scores, labels)`` sorted by score, descending.
    """
    segments, scores, labels = _as_detections(segments, scores, labels)

    def run_one(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = idx[np.argsort(-scores[idx], kind="stable")]
        keep = []
        while order.size:
            best, order = order[0], order[1:]
            keep.append(best)
            order = order[segment_iou(segments[best], segments[order]) <= iou_threshold]
        keep = np.array(keep, dtype=np.int64)
        return keep, scores[keep]

    kept, kept_scores = _per_class(labels, run_one)
    return _sorted(segments[kept], kept_scores, labels[kept])


def soft_nms(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    sigma: float,
    iou_threshold: float,
    min_score: float,
    method: str = "gaussian",
) -> Detections:
    """Per-class Soft-NMS: decay the scores of detections overlapping better ones.

    Args:
        segments: ``(M, 2)``.
        scores: ``(M,)``.
        labels: ``(M,)`` class indices.
        sigma: gaussian decay ``exp(-iou**2 / sigma)``.
        iou_threshold: linear decay ``1 - iou`` applies only above it.
        min_score: detections whose score falls below it are dropped.
        method: "gaussian" or "linear".

    Returns:
        Kept ``(segments, rescored scores, labels)`` sorted by score, descending.
    """
    if method not in SOFT_METHODS:
        raise PbdError(f"soft_method {method!r} unknown; use one of {SOFT_METHODS}")
    segments, scores, labels = _as_detections(segments, scores, labels)
    work = scores.copy()

    def decay(iou: np.ndarray) -> np.ndarray:
        if method == "gaussian":
            return np.exp(-(iou * iou) / sigma)
        return np.where(iou > iou_threshold, 1.0 - iou, 1.0)

    def run_one(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        alive = idx[work[idx] >= min_score]
        keep, keep_scores = [], []
        while alive.size:
            pos = int(np.argmax(work[alive]))
            best = alive[pos]
            keep.append(best)
            keep_scores.append(work[best])
            alive = np.delete(alive, pos)
            work[alive] *= decay(segment_iou(segments[best], segments[alive]))
            alive = alive[work[alive] >= min_score]
        return np.array(keep, dtype=np.int64), np.array(keep_scores, dtype=np.float64)

    kept, kept_scores = _per_class(labels, run_one)
    return _sorted(segments[kept], kept_scores, labels[kept])


def postprocess(
    segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, config: PostprocessConfig
) -> Detections:
    """Apply the configured NMS, then keep the best ``max_detections``.

    Args:
        segments: ``(M, 2)`` candidates, e.g. from ``select_topk``.
        scores: ``(M,)``.
        labels: ``(M,)`` class indices.
        config: NMS settings.

    Returns:
        ``(segments, scores, labels)`` sorted by score, descending.
    """
    if config.nms_method == "hard":
        dets = hard_nms(segments, scores, labels, config.iou_threshold)
    elif config.nms_method == "soft":
        dets = soft_nms(
            segments,
            scores,
            labels,
            sigma=config.sigma,
            iou_threshold=config.iou_threshold,
            min_score=config.min_score,
            method=config.soft_method,
        )
    else:
        dets = _sorted(*_as_detections(segments, scores, labels))
    return tuple(a[: config.max_detections] for a in dets)


def detections_to_dicts(
    segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """ActivityNet-style entries ``{"label", "segment", "score"}`` with plain floats.

    Args:
        segments: ``(M, 2)`` in seconds.
        scores: ``(M,)``.
        labels: ``(M,)`` indices into ``class_names``.
        class_names: name of each class index.
    """
    segments, scores, labels = _as_detections(segments, scores, labels)
    bad = labels[(labels < 0) | (labels >= len(class_names))]
    if bad.size:
        raise PbdError(
            f"label index {int(bad[0])} outside the {len(class_names)} class names; "
            "check the class list matches the model"
        )
    return [
        {"label": class_names[lab], "segment": [float(s), float(e)], "score": float(sc)}
        for (s, e), sc, lab in zip(segments.tolist(), scores.tolist(), labels.tolist())
    ]
