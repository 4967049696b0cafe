"""mAP of an exported model (.onnx / .engine) on a dataset split, without torch.

The shipped artifact runs exactly as a user runs it, `Detector.detect` on each video file
(or feature file), and its detections are scored by the same mAP code as torch models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pbd_deploy.core.annotations import VideoInfo, ground_truth, load_annotations
from pbd_deploy.core.features import load_features
from pbd_deploy.core.metrics import DetectionResult, evaluate_detections
from pbd_deploy.errors import PbdError
from pbd_deploy.runtime.detector import Detector


def evaluate_artifact(
    path,
    data,
    split: str = "test",
    thresholds=None,
    past_end: str = "error",
    progress: Callable[..., None] | None = None,
    subsets: str = "default",
    **detector_options,
) -> tuple[DetectionResult, dict[str, list[dict]]]:
    """Run `path` over one split of the dataset directory `data`; (mAP, predictions).

    Args:
        path: model.onnx / model.fp16.onnx / model.int8.onnx / model.engine (with model.json).
        data: dataset directory (annotations.json + videos/ or features/).
        thresholds: tIoU thresholds; default the model's (model.json "thresholds").
            A class-agnostic model is scored class-agnostically (every ground-truth
            segment takes its one class) unless `video_scores` gives the annotated classes.
        subsets: which split role each annotation subset feeds (`--subsets`).
        detector_options: passed to `Detector` (providers, threads, video_scores).
    """
    detector = Detector(path, **detector_options)
    root = Path(data)
    annotations = load_annotations(root / "annotations.json", past_end=past_end, subsets=subsets)
    videos = annotations.split(split)
    if detector.video_scores is not None:  # every video has scores before any work starts
        for video in videos:
            detector.video_scores.of(video.video_id)
    predictions = {}
    for i, video in enumerate(videos):
        source, fps = _source(detector, root, video)
        found = detector.detect(source, fps=fps, duration=video.duration, video_id=video.video_id)
        predictions[video.video_id] = [d.to_dict() for d in found]
        if progress:
            progress("eval", i + 1, len(videos))
    thresholds = thresholds or detector.thresholds
    label = None if detector.video_scores is not None else detector.truth_label
    return evaluate_detections(ground_truth(videos, label), predictions, thresholds), predictions


def _source(detector: Detector, root: Path, video: VideoInfo):
    """What `detect` takes for one video of the dataset: (file or feature array, fps)."""
    if detector.spec.mode != "features":
        return root / "videos" / f"{video.video_id}.mp4", None
    if not video.fps:
        raise PbdError(f"{video.video_id}: feature mode needs 'fps' in annotations.json")
    path = root / "features" / f"{video.video_id}.npy"
    return load_features(path, detector.spec.feature_dim), float(video.fps)
