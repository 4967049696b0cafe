"""OpenTAD's post-processing, step for step, in numpy (torch-free, for the runtime too).

What `SingleStageDetector.post_processing`, `convert_to_seconds`, `gather_ddp_results`
and `batched_nms` + the `nms_1d_cpu.softnms` C++ kernel do, in the same order and in
float32 as OpenTAD does, so a converted OpenTAD model reports the detections OpenTAD
reports (tests/models/test_opentad_fixtures.py checks against OpenTAD's own output):

1. per window: candidates are (point, class) pairs scoring > `pre_nms_thresh`, the best
   `pre_nms_topk`; segments go to seconds ((steps * snippet_stride + window start) / fps),
   are clipped to [0, duration] and rounded to 0.01 s, scores to 1e-4;
2. per video, over all windows: Gaussian Soft-NMS per class (`multiclass`) or over all
   classes (then optionally score voting), `max_seg_num` per class and in total.

Differences from `core.postprocess` (our default): OpenTAD keeps zero-length segments,
rounds before NMS, takes the IoU over lengths + 1e-6, picks the first of equal scores in
its swap order, and only drops a decayed score below `min_score` (0 for THUMOS).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pbd_deploy.errors import PbdError


@dataclass
class OpenTADPostConfig:
    """OpenTAD's `post_processing` settings (THUMOS14 AdaTAD defaults)."""

    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000
    sigma: float = 0.7
    max_seg_num: int = 2000
    min_score: float = 0.0
    multiclass: bool = True
    voting_thresh: float = 0.7  # only used when not multiclass, as in OpenTAD

    def to_dict(self) -> dict:
        return asdict(self)


def window_candidates(
    scores: np.ndarray,
    segments: np.ndarray,
    window_start: float,
    fps: float,
    duration: float,
    config: OpenTADPostConfig,
    snippet_stride: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window's candidates: segments (M, 2) in seconds, scores (M,), labels (M,).

    Args:
        scores: (N, K) class probabilities per point; segments: (N, 2) in head steps.
        window_start: the window's first frame (OpenTAD's window_start_frame + offset).
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
    segs = segments[idx // k]
    secs = (segs * np.float32(snippet_stride) + np.float32(window_start)) / np.float32(fps)
    secs = np.where(secs <= 0, np.float32(0), secs)
    secs = np.where(secs >= duration, np.float32(duration), secs)
    return np.round(secs.astype(np.float64), 2), np.round(flat[idx].astype(np.float64), 4), idx % k


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
    return dets[:n, :2].astype(np.float64), dets[:n, 2].astype(np.float64), inds[:n]


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
    """OpenTAD's `batched_nms` with Soft-NMS, rounded as its results dict is."""
    segments = np.asarray(segments, dtype=np.float32).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if len(scores) == 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64)
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
            segs = seg_voting(
                segs, segments.astype(np.float64), scores.astype(np.float64), config.voting_thresh
            )
    order = np.argsort(-scs, kind="stable")[: config.max_seg_num]
    return np.round(segs[order], 2), np.round(scs[order], 4), labs[order].astype(np.int64)


def fuse_video_classifier(
    segments: np.ndarray, scores: np.ndarray, video_scores: np.ndarray, topk: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ActivityNet: class-agnostic detections x the top-k classes of a video classifier.

    OpenTAD's CUHKANETClassifier: each detection is repeated for each of the video's
    `topk` best classes, with score = detection score * class score.
    """
    video_scores = np.asarray(video_scores, dtype=np.float64)
    best = np.argsort(-video_scores, kind="stable")[:topk]
    segs = np.concatenate([segments] * len(best))
    scs = np.concatenate([np.asarray(scores) * video_scores[c] for c in best])
    labels = np.concatenate([np.full(len(scores), c, dtype=np.int64) for c in best])
    return segs, scs, labels
