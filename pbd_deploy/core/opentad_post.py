"""OpenTAD's post-processing, step for step, in numpy (torch-free, for the runtime too).

What `SingleStageDetector.post_processing`, `convert_to_seconds`, the external classifier
(`CUHKANETClassifier`), `gather_ddp_results` and `batched_nms` + the `nms_1d_cpu.softnms`
C++ kernel do, in the same order and in float32 as OpenTAD does, so a converted OpenTAD
model reports the detections OpenTAD reports (tests/models/test_opentad_fixtures.py checks
against OpenTAD's own output):

1. per window: candidates are (point, class) pairs scoring > `pre_nms_thresh`, the best
   `pre_nms_topk` (a 1-class detector keeps every point); without sliding windows (one
   resized window per video, ActivityNet) Soft-NMS runs here, in head steps; segments go
   to seconds with OpenTAD's time mapping (a point's step is its start, no half-step
   centre), are clipped to [0, duration]; a video classifier's scores are fused (optional);
   segments are rounded to 0.01 s, scores to 1e-4;
2. per video, over all windows (sliding windows only): Gaussian Soft-NMS per class
   (`multiclass`) or over all classes (then optionally score voting), `max_seg_num` per
   class and in total, rounded again.

Differences from `core.postprocess` (our default): OpenTAD keeps zero-length segments,
rounds before NMS, takes the IoU over lengths + 1e-6, picks the first of equal scores in
its swap order, and only drops a decayed score below `min_score` (0 for THUMOS).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pbd_deploy.errors import PbdError


@dataclass
class OpenTADPostConfig:
    """OpenTAD's `post_processing` settings (defaults: AdaTAD's THUMOS14 configs).

    Attributes:
        pre_nms_thresh, pre_nms_topk: per-window candidate filter (multi-class detectors).
        sigma: Gaussian Soft-NMS width; max_seg_num: detections kept per video.
        min_score: Soft-NMS drops decayed scores below it.
        multiclass: Soft-NMS per class (True) or over all classes (False).
        voting_thresh: score voting IoU when not multiclass; 0 disables it.
        sliding_window: windows slide over the video (THUMOS: NMS across windows) or each
            video is one resized window (ActivityNet: NMS within the window).
        video_topk: classes of a video classifier fused with each detection (OpenTAD's
            `external_cls.topk`); used only when video scores are given.
    """

    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000
    sigma: float = 0.7
    max_seg_num: int = 2000
    min_score: float = 0.0
    multiclass: bool = True
    voting_thresh: float = 0.7  # only used when not multiclass, as in OpenTAD
    sliding_window: bool = True
    video_topk: int = 2

    def __post_init__(self) -> None:
        for name in ("pre_nms_topk", "max_seg_num", "video_topk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PbdError(
                    f"opentad postprocess {name} must be a positive integer, got {value!r}"
                )
        for name in ("pre_nms_thresh", "min_score", "voting_thresh"):
            value = getattr(self, name)
            if not _is_real(value) or not 0 <= value <= 1:
                raise PbdError(f"opentad postprocess {name} must be in [0, 1], got {value!r}")
        if not _is_real(self.sigma) or not self.sigma > 0:
            raise PbdError(f"opentad postprocess sigma must be positive, got {self.sigma!r}")
        for name in ("multiclass", "sliding_window"):
            if not isinstance(getattr(self, name), bool):
                raise PbdError(f"opentad postprocess {name} must be true or false")

    @property
    def max_detections(self) -> int:
        """Detections kept per video (what `core.compare` caps at)."""
        return self.max_seg_num

    def to_dict(self) -> dict:
        return asdict(self)


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def select_candidates(
    scores: np.ndarray, segments: np.ndarray, config: OpenTADPostConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window's candidates in head steps: segments (M, 2), scores (M,), labels (M,), float32.

    Args:
        scores: (N, K) class probabilities of the window's valid points.
        segments: (N, 2) regressed segments in head steps.
    """
    scores = np.asarray(scores, dtype=np.float32)
    segments = np.asarray(segments, dtype=np.float32)
    if scores.ndim != 2 or segments.shape != (scores.shape[0], 2):
        raise PbdError(
            f"expected scores (N, K) and segments (N, 2), got {scores.shape} and {segments.shape}"
        )
    k = scores.shape[1]
    flat = scores.ravel()
    if k > 1:
        idx = np.flatnonzero(flat > config.pre_nms_thresh)
        idx = idx[np.argsort(-flat[idx], kind="stable")[: config.pre_nms_topk]]
    else:  # OpenTAD keeps every point of a 1-class (class-agnostic) detector
        idx = np.arange(len(flat))
    return segments[idx // k], flat[idx], (idx % k).astype(np.int64)


def clip_seconds(secs: np.ndarray, duration: float) -> np.ndarray:
    """`convert_to_seconds`'s truncation to [0, duration] (in the dtype of `secs`)."""
    secs = np.where(secs <= 0, secs.dtype.type(0), secs)
    return np.where(secs >= duration, secs.dtype.type(duration), secs)


def round_detections(segments, scores, labels):
    """OpenTAD's results dict: segments to 0.01 s, scores to 1e-4 (float64 out)."""
    segments = np.round(np.asarray(segments, dtype=np.float64).reshape(-1, 2), 2)
    return segments, np.round(np.asarray(scores, dtype=np.float64), 4), labels


def soft_nms_1d(
    segments: np.ndarray, scores: np.ndarray, sigma: float, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`nms_1d_cpu.softnms` (method 2, Gaussian): kept segments, decayed scores, source indices.

    The C++ kernel repeatedly swaps the best remaining detection (first of equal scores in
    its current order) to the front, then decays the rest by exp(-iou^2 / sigma); a score
    falling below `min_score` is replaced by the last remaining one. Same here, in float32.
    """
    x1 = np.asarray(segments[:, 0], dtype=np.float32).copy()
    x2 = np.asarray(segments[:, 1], dtype=np.float32).copy()
    sc = np.asarray(scores, dtype=np.float32).copy()
    areas = x2 - x1 + np.float32(1e-6)
    inds = np.arange(len(sc))
    dets = np.zeros((len(sc), 3), dtype=np.float32)
    n, sigma, min_score = len(sc), np.float32(sigma), np.float32(min_score)
    i = 0
    while i < n:
        best = i + int(np.argmax(sc[i:n]))  # argmax: the first of equal maxima, like `<`
        for a in (x1, x2, sc, areas, inds):
            a[i], a[best] = a[best], a[i]
        dets[i] = x1[i], x2[i], sc[i]
        rest = slice(i + 1, n)
        inter = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ovr = inter / (areas[i] + areas[rest] - inter)
        sc[rest] *= np.exp(-(ovr * ovr) / sigma)
        pos = i + 1
        while pos < n:  # drop decayed scores below min_score: the last one takes the slot
            if sc[pos] < min_score:
                for a in (x1, x2, sc, areas, inds):
                    a[pos] = a[n - 1]
                n -= 1
            else:
                pos += 1
        i += 1
    return dets[:n, :2], dets[:n, 2], inds[:n]


def seg_voting(nms_segs, all_segs, all_scores, iou_threshold, score_offset=1.5):
    """OpenTAD's score voting: each kept segment becomes the score-weighted mean of overlaps."""
    del score_offset  # OpenTAD computes it, then weights by the raw scores
    left = np.maximum(nms_segs[:, None, 0], all_segs[None, :, 0])
    right = np.minimum(nms_segs[:, None, 1], all_segs[None, :, 1])
    inter = np.clip(right - left, 0, None)
    lens = (nms_segs[:, 1] - nms_segs[:, 0])[:, None] + (all_segs[:, 1] - all_segs[:, 0])[None]
    iou = inter / (lens - inter)
    weights = (iou >= iou_threshold) * all_scores[None, :]
    weights = weights / weights.sum(1, keepdims=True)
    return weights @ all_segs


def batched_nms(
    segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, config: OpenTADPostConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenTAD's `batched_nms` with Gaussian Soft-NMS, float32 in and out (not rounded)."""
    segments = np.asarray(segments, dtype=np.float32).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(scores) == 0:
        return segments, scores, labels
    if config.multiclass:
        parts = []
        for label in np.unique(labels):
            idx = np.flatnonzero(labels == label)
            s, c, _ = soft_nms_1d(segments[idx], scores[idx], config.sigma, config.min_score)
            keep = min(len(c), config.max_seg_num)
            parts.append((s[:keep], c[:keep], np.full(keep, label)))
        segs, scs, labs = (np.concatenate(p) for p in zip(*parts))
    else:
        segs, scs, kept = soft_nms_1d(segments, scores, config.sigma, config.min_score)
        keep = min(len(scs), config.max_seg_num)
        segs, scs, labs = segs[:keep], scs[:keep], labels[kept[:keep]]
        if config.voting_thresh > 0:
            segs = seg_voting(segs, segments, scores, np.float32(config.voting_thresh))
    order = np.argsort(-scs, kind="stable")[: config.max_seg_num]
    return segs[order].astype(np.float32), scs[order], labs[order].astype(np.int64)


def fuse_video_classifier(
    segments: np.ndarray, scores: np.ndarray, video_scores: np.ndarray, topk: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ActivityNet: class-agnostic detections x the top-k classes of a video classifier.

    OpenTAD's CUHKANETClassifier: each detection is repeated for each of the video's
    `topk` best classes (by descending score, ties in class order as a stable sort),
    with score = detection score * class score; labels index the classifier's classes.
    """
    scores = np.asarray(scores)
    video_scores = np.asarray(video_scores, dtype=np.float64)
    best = np.argsort(-video_scores, kind="stable")[:topk]
    segs = np.concatenate([segments] * len(best))
    scs = np.concatenate([scores * scores.dtype.type(video_scores[c]) for c in best])
    labels = np.concatenate([np.full(len(scores), c, dtype=np.int64) for c in best])
    return segs, scs, labels


@dataclass
class VideoScores:
    """Video-level class scores of an external classifier, in OpenTAD's CUHK results format:
    ``{"class": [name, ...], "results": {video id: [score per class, ...]}}``."""

    class_names: list[str]
    results: dict[str, list]
    source: str = "video scores"

    @classmethod
    def load(cls, path) -> "VideoScores":
        """Read and check the file; one-line errors naming the problem."""
        path = Path(path)
        if not path.is_file():
            raise PbdError(f"video scores file {path} does not exist; check --video-scores")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PbdError(f"video scores file {path} is not valid JSON ({exc})") from None
        names = data.get("class") if isinstance(data, dict) else None
        results = data.get("results") if isinstance(data, dict) else None
        if (
            not isinstance(names, list)
            or not all(isinstance(n, str) for n in names)
            or not isinstance(results, dict)
        ):
            raise PbdError(
                f"video scores file {path} needs 'class' (list of names) and 'results' "
                "({video id: [score per class]}), as OpenTAD's CUHK classifier file"
            )
        return cls(list(names), results, str(path))

    def check_detector(self, num_classes: int) -> None:
        """Fusion replaces the labels of a class-agnostic detector, as OpenTAD's does."""
        if num_classes != 1:
            raise PbdError(
                f"{self.source} gives the classes of a class-agnostic (1-class) detector's "
                f"segments; this model detects {num_classes} classes, so drop --video-scores"
            )

    def of(self, video_id: str) -> np.ndarray:
        """(K,) scores of one video; a missing video or a wrong count is one line."""
        if video_id not in self.results:
            raise PbdError(f"video {video_id!r} has no scores in {self.source}")
        row = self.results[video_id]
        if not isinstance(row, list) or len(row) != len(self.class_names):
            count = len(row) if isinstance(row, list) else "no"
            raise PbdError(
                f"{self.source}: video {video_id!r} has {count} class scores, but the file "
                f"names {len(self.class_names)} classes"
            )
        return np.asarray(row, dtype=np.float64)
