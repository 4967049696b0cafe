"""Run a torch detector over a dataset split and score it with the ActivityNet protocol."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pbd_deploy.core.annotations import VideoInfo, ground_truth, load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.core.metrics import (
    ACTIVITYNET_THRESHOLDS,
    THUMOS_THRESHOLDS,
    DetectionResult,
    evaluate_detections,
    load_predictions,
)
from pbd_deploy.core.metrics import save_predictions as save_predictions_file
from pbd_deploy.core.postprocess import (
    PostprocessConfig,
    detections_to_dicts,
)
from pbd_deploy.models.io import load_model
from pbd_deploy.core.nms import fast_postprocess
from pbd_deploy.core.windows import window_candidates  # numpy-only, shared with the runtime

Progress = Callable[..., None]


def window_parts(dataset: TadDataset, video: VideoInfo, windows, scores, segments, positions,
                 config: PostprocessConfig) -> list:  # fmt: skip
    """Per-window candidates in seconds, before NMS.

    Args:
        windows: the (start, ..., valid points) tuples of the windows, in order.
        scores: (B, N, K) probabilities; segments: (B, N, 2) head points; positions: (N,).
    """
    _, fps = dataset.load(video)
    parts = []
    for (start, *_, valid), sc, sg in zip(windows, scores, segments):
        to_sec = lambda p, s=start: dataset.points_to_seconds(p, s, fps)  # noqa: E731
        parts.append(window_candidates(sc, sg, positions, valid, to_sec, video.duration, config))
    return parts


def merge_windows(parts: list, config: PostprocessConfig, class_names) -> list[dict]:
    """One video's detections from its windows' candidates: per-class Soft-NMS, top-k."""
    segs, scs, labels = (np.concatenate(a) for a in zip(*parts))
    dets = fast_postprocess(segs, scs, labels, config)  # = postprocess, stops at the top-k
    return detections_to_dicts(*dets, class_names)


def detect_video(
    model,
    dataset: TadDataset,
    video: VideoInfo,
    config: PostprocessConfig,
    batch_size: int = 8,
    device: str = "cpu",
) -> list[dict]:
    """Detections of one video: sliding windows, per-window top-k, then per-class NMS."""
    positions = model.positions.cpu().numpy()
    # Windows are built lazily, one batch at a time: a real-size window (768 frames at
    # 160x160) is 236 MB as float32, so a whole video's windows must not be held at once.
    windows = dataset.sliding_windows(video)
    parts = []
    while batch := list(itertools.islice(windows, batch_size)):
        x = torch.from_numpy(np.stack([w[1] for w in batch])).to(device)
        with torch.no_grad():
            scores, segments = model.predict(x)
        scores, segments = scores.cpu().numpy(), segments.cpu().numpy()
        parts += window_parts(dataset, video, batch, scores, segments, positions, config)
    return merge_windows(parts, config, dataset.config.class_names)


def predict_split(
    model,
    dataset: TadDataset,
    role: str,
    config: PostprocessConfig | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> dict[str, list[dict]]:
    """Detections for every video of a split: {video_id: [{label, segment, score}]}."""
    config = config or PostprocessConfig()
    videos = dataset.split(role)
    model = model.to(device).eval()
    out = {}
    for i, video in enumerate(videos):
        out[video.video_id] = detect_video(model, dataset, video, config, device=device)
        if progress:
            progress("eval", i + 1, len(videos))
    return out


def evaluate_model(
    model,
    dataset: TadDataset,
    role: str = "test",
    config: PostprocessConfig | None = None,
    thresholds=THUMOS_THRESHOLDS,
    device: str = "cpu",
    progress: Progress | None = None,
) -> tuple[DetectionResult, dict[str, list[dict]]]:
    """mAP of `model` on one split of `dataset`, and the predictions it was computed from."""
    predictions = predict_split(model, dataset, role, config, device, progress)
    result = evaluate_detections(ground_truth(dataset.split(role)), predictions, thresholds)
    return result, predictions


def evaluate_path(
    model,
    data=None,
    annotations=None,
    split: str = "test",
    thresholds: str = "thumos",
    device: str = "cpu",
    save_predictions=None,
    progress: Progress | None = None,
    past_end: str = "error",
) -> DetectionResult:
    """`pbd-deploy eval`: score a model directory on DATA, or a predictions file on ANN.json."""
    levels = {"thumos": THUMOS_THRESHOLDS, "activitynet": ACTIVITYNET_THRESHOLDS}[thresholds]
    path = Path(model)
    if path.is_dir() or path.suffix in (".onnx", ".engine"):
        if not data:
            raise PbdError("evaluating a model needs --data DATA")
        if path.is_dir():
            detector = load_model(path, device)
        else:  # an exported artifact, run by the torch-free runtime
            from pbd_deploy.eval.artifact import load_artifact

            detector = load_artifact(path)
        result, predictions = evaluate_model(
            detector,
            TadDataset(data, detector.config, past_end),
            split,
            thresholds=levels,
            device=device,
            progress=progress,
        )
    elif path.suffix == ".json":
        if not annotations:
            raise PbdError("scoring a predictions file needs --annotations ANN.json")
        predictions = load_predictions(path)
        videos = load_annotations(annotations, past_end=past_end).split(split)
        wanted = {v.video_id for v in videos}
        predictions = {k: v for k, v in predictions.items() if k in wanted}
        result = evaluate_detections(ground_truth(videos), predictions, levels)
    elif not path.exists():
        raise PbdError(f"{path} does not exist")
    else:
        raise PbdError(
            f"cannot evaluate {path}: expected a model directory, a .onnx / .engine file "
            "or a predictions .json"
        )
    if save_predictions:
        save_predictions_file(predictions, save_predictions)
    return result
