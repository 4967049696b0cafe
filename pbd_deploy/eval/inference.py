"""Run a torch detector over a dataset split and score it with the ActivityNet protocol."""

from __future__ import annotations

import itertools
from typing import Callable

import torch

from pbd_deploy.core.annotations import VideoInfo, ground_truth
from pbd_deploy.core.metrics import DetectionResult, evaluate_detections
from pbd_deploy.core.opentad_post import VideoScores
from pbd_deploy.core.postprocess import detections_to_dicts
from pbd_deploy.core.postprocessors import (  # numpy-only, shared with the runtime
    Postprocess,
    video_detections,
    window_candidates,
)
from pbd_deploy.data import distributed
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.data.loader import eval_batches

Progress = Callable[..., None]


def window_parts(dataset: TadDataset, video: VideoInfo, windows, scores, segments, positions,
                 post: Postprocess, video_scores=None) -> list:  # fmt: skip
    """Per-window candidates in seconds, before NMS (`core.postprocessors.window_candidates`).

    Args:
        windows: the (start, ..., valid points) tuples of the windows, in order.
        scores: (B, N, K) probabilities; segments: (B, N, 2) head points; positions: (N,).
        post: the model's post-processing (`DetectorConfig.post`).
        video_scores: (C,) this video's classifier scores to fuse, or None.
    """
    _, fps = dataset.info(video)
    parts = []
    for (start, *_, valid), sc, sg in zip(windows, scores, segments):
        to_sec = lambda p, s=start: dataset.points_to_seconds(p, s, fps, video.duration)  # noqa: E731
        parts.append(window_candidates(post, sc, sg, positions, valid, to_sec, video.duration,
                                       video_scores))  # fmt: skip
    return parts


def merge_windows(parts: list, post: Postprocess, class_names) -> list[dict]:
    """One video's detections from its windows' candidates (`video_detections`)."""
    return detections_to_dicts(*video_detections(post, parts), class_names)


def predict_batches(model, dataset: TadDataset, batches, post: Postprocess | None = None,
                    device: str = "cpu", video_scores: VideoScores | None = None):  # fmt: skip
    """Yield (video id, detections) per video of `batches` (from `eval_batches`): each
    window's candidates, then the video's detections, with `post` (default: the model's).
    With `video_scores` the labels are its classes (OpenTAD's external classifier)."""
    post = post or model.config.post
    positions = model.positions.cpu().numpy()
    names = video_scores.class_names if video_scores else dataset.config.class_names
    for video_id, group in itertools.groupby(batches, key=lambda batch: batch[0].video_id):
        fused = video_scores.of(video_id) if video_scores else None
        parts = []
        for video, windows, x in group:
            x = x.to(device, non_blocking=True)
            with torch.no_grad():
                if getattr(model, "masked", False):  # OpenTAD's padding mask (Detector.detect)
                    valid = torch.tensor([w[-1] for w in windows], dtype=torch.float32)
                    scores, segments = model.predict(x, valid)
                else:
                    scores, segments = model.predict(x)
            scores, segments = scores.cpu().numpy(), segments.cpu().numpy()
            parts += window_parts(dataset, video, windows, scores, segments, positions, post,
                                  fused)  # fmt: skip
        yield video_id, merge_windows(parts, post, names)


def detect_video(
    model,
    dataset: TadDataset,
    video: VideoInfo,
    post: Postprocess | None = None,
    batch_size: int = 8,
    device: str = "cpu",
) -> list[dict]:
    """Detections of one video: its windows' candidates, then the video's detections."""
    # Windows are decoded one batch at a time: a real-size window (768 frames at 160x160)
    # is 236 MB as float32, so a whole video's windows must not be held at once.
    batches = eval_batches(dataset, [video], batch_size)
    return dict(predict_batches(model, dataset, batches, post, device))[video.video_id]


def predict_split(
    model,
    dataset: TadDataset,
    role: str,
    post: Postprocess | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    workers: int = 0,
    batch_size: int = 8,
    video_scores: VideoScores | None = None,
) -> dict[str, list[dict]]:
    """Detections for every video of a split: {video_id: [{label, segment, score}]}.

    `post` defaults to the model's post-processing. Windows stream from `workers` loader
    processes (0: this process), one video after the other. Under torchrun each rank runs
    every world-th video and all ranks get the whole result.
    """
    mine = distributed.shard(dataset.split(role))
    if video_scores:  # every video has scores before any work starts
        for video in mine:
            video_scores.of(video.video_id)
    model = model.to(device).eval()
    batches = eval_batches(dataset, mine, batch_size, workers, device)
    out = {}
    for video_id, detections in predict_batches(model, dataset, batches, post, device,
                                                video_scores):  # fmt: skip
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
    post: Postprocess | None = None,
    thresholds=None,
    device: str = "cpu",
    progress: Progress | None = None,
    workers: int = 0,
    video_scores: VideoScores | None = None,
) -> tuple[DetectionResult, dict[str, list[dict]]]:
    """mAP of `model` on one split of `dataset`, and the predictions it was computed from.

    `post` and `thresholds` default to the model's (`DetectorConfig.post`, `.thresholds`).
    A class-agnostic model is scored class-agnostically (every ground-truth segment takes
    its one class) unless `video_scores` gives its detections the annotated classes.
    """
    predictions = predict_split(model, dataset, role, post, device, progress, workers,
                                video_scores=video_scores)  # fmt: skip
    thresholds = thresholds or model.config.thresholds
    label = None if video_scores else dataset.config.truth_label
    truth = ground_truth(dataset.split(role), label)
    result = evaluate_detections(truth, predictions, thresholds)
    return result, predictions
