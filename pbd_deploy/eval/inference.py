"""Run a torch detector over a dataset split and score it with the ActivityNet protocol."""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch

from pbd_deploy.core.annotations import VideoInfo, ground_truth
from pbd_deploy.core.metrics import THUMOS_THRESHOLDS, DetectionResult, evaluate_detections
from pbd_deploy.core.nms import fast_postprocess
from pbd_deploy.core.postprocess import (
    PostprocessConfig,
    detections_to_dicts,
)
from pbd_deploy.core.windows import window_candidates  # numpy-only, shared with the runtime
from pbd_deploy.data import distributed
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.data.loader import eval_batches

Progress = Callable[..., None]


def window_parts(dataset: TadDataset, video: VideoInfo, windows, scores, segments, positions,
                 config: PostprocessConfig) -> list:  # fmt: skip
    """Per-window candidates in seconds, before NMS.

    Args:
        windows: the (start, ..., valid points) tuples of the windows, in order.
        scores: (B, N, K) probabilities; segments: (B, N, 2) head points; positions: (N,).
    """
    _, fps = dataset.info(video)
    parts = []
    for (start, *_, valid), sc, sg in zip(windows, scores, segments):
        to_sec = lambda p, s=start: dataset.points_to_seconds(p, s, fps, video.duration)  # noqa: E731
        parts.append(window_candidates(sc, sg, positions, valid, to_sec, video.duration, config))
    return parts


def merge_windows(parts: list, config: PostprocessConfig, class_names) -> list[dict]:
    """One video's detections from its windows' candidates: per-class Soft-NMS, top-k."""
    segs, scs, labels = (np.concatenate(a) for a in zip(*parts))
    dets = fast_postprocess(segs, scs, labels, config)  # = postprocess, stops at the top-k
    return detections_to_dicts(*dets, class_names)


def predict_batches(model, dataset: TadDataset, batches, config: PostprocessConfig,
                    device: str = "cpu"):  # fmt: skip
    """Yield (video id, detections) per video of `batches` (from `eval_batches`):
    per-window top-k, then per-class Soft-NMS over the video's windows."""
    positions = model.positions.cpu().numpy()
    for video_id, group in itertools.groupby(batches, key=lambda batch: batch[0].video_id):
        parts = []
        for video, windows, x in group:
            with torch.no_grad():
                scores, segments = model.predict(x.to(device, non_blocking=True))
            scores, segments = scores.cpu().numpy(), segments.cpu().numpy()
            parts += window_parts(dataset, video, windows, scores, segments, positions, config)
        yield video_id, merge_windows(parts, config, dataset.config.class_names)


def detect_video(
    model,
    dataset: TadDataset,
    video: VideoInfo,
    config: PostprocessConfig,
    batch_size: int = 8,
    device: str = "cpu",
) -> list[dict]:
    """Detections of one video: sliding windows, per-window top-k, then per-class NMS."""
    # Windows are decoded one batch at a time: a real-size window (768 frames at 160x160)
    # is 236 MB as float32, so a whole video's windows must not be held at once.
    batches = eval_batches(dataset, [video], batch_size)
    return dict(predict_batches(model, dataset, batches, config, device))[video.video_id]


def predict_split(
    model,
    dataset: TadDataset,
    role: str,
    config: PostprocessConfig | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    workers: int = 0,
    batch_size: int = 8,
) -> dict[str, list[dict]]:
    """Detections for every video of a split: {video_id: [{label, segment, score}]}.

    Windows stream from `workers` loader processes (0: this process), one video after the
    other. Under torchrun each rank runs every world-th video and all ranks get the whole
    result.
    """
    config = config or PostprocessConfig()
    mine = distributed.shard(dataset.split(role))
    model = model.to(device).eval()
    batches = eval_batches(dataset, mine, batch_size, workers, device)
    out = {}
    for video_id, detections in predict_batches(model, dataset, batches, config, device):
        out[video_id] = detections
        if progress:
            progress("eval", len(out), len(mine))
    merged = {}
    for part in distributed.gather(out):
        merged.update(part)
    return {v.video_id: merged[v.video_id] for v in dataset.split(role)}


def evaluate_model(
    model,
    dataset: TadDataset,
    role: str = "test",
    config: PostprocessConfig | None = None,
    thresholds=THUMOS_THRESHOLDS,
    device: str = "cpu",
    progress: Progress | None = None,
    workers: int = 0,
) -> tuple[DetectionResult, dict[str, list[dict]]]:
    """mAP of `model` on one split of `dataset`, and the predictions it was computed from."""
    predictions = predict_split(model, dataset, role, config, device, progress, workers)
    result = evaluate_detections(ground_truth(dataset.split(role)), predictions, thresholds)
    return result, predictions
