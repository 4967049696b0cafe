"""`pbd-deploy eval`: one entry point for a model directory, an exported file or predictions.

Importing this module needs no torch: exported files run on the torch-free runtime and
predictions files need only the mAP code; torch is loaded only for a model directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from pbd_deploy.core.annotations import ground_truth, load_annotations, subset_roles
from pbd_deploy.core.atomic import check_folder
from pbd_deploy.core.config import check_workers
from pbd_deploy.core.metrics import (
    ACTIVITYNET_THRESHOLDS,
    THUMOS_THRESHOLDS,
    DetectionResult,
    evaluate_detections,
    load_predictions,
)
from pbd_deploy.core.metrics import (
    save_predictions as save_predictions_file,
)
from pbd_deploy.errors import PbdError

THRESHOLDS = {"thumos": THUMOS_THRESHOLDS, "activitynet": ACTIVITYNET_THRESHOLDS}
AGNOSTIC_LABEL = "action"  # the one class of class-agnostic scoring of a predictions file


def evaluate_path(
    model,
    data=None,
    annotations=None,
    split: str = "test",
    thresholds: str | None = None,
    device: str = "cpu",
    save_predictions=None,
    progress: Callable[..., None] | None = None,
    past_end: str = "error",
    workers: int = 0,
    subsets: str = "default",
    video_scores=None,
    class_agnostic: bool = False,
) -> DetectionResult:
    """Score a model directory or a .onnx / .engine file on DATA, or predictions on ANN.json.

    A model directory reads its windows with `workers` loader processes; under torchrun its
    videos are split across ranks and every rank returns the same result. `subsets` says
    which split role each annotation subset feeds (`--subsets`, see `subset_roles`).

    A model is scored at its own tIoU thresholds (config.json / model.json "thresholds")
    unless `thresholds` ("thumos" or "activitynet") says otherwise; a predictions file at
    THUMOS14's by default. `video_scores` (a CUHK-format classifier results file) is fused
    with a class-agnostic OpenTAD model's detections, as OpenTAD does on ActivityNet.
    Without it a class-agnostic model (config.json / model.json "class_agnostic") is scored
    class-agnostically: every ground-truth segment takes the model's one class.
    `class_agnostic` scores a predictions file that way: every label, predicted and
    annotated, becomes one class (`AGNOSTIC_LABEL`).
    """
    check_workers(workers)
    subset_roles(subsets)  # a bad mapping fails before a model is loaded
    if thresholds is not None and thresholds not in THRESHOLDS:
        raise PbdError(f"--thresholds {thresholds!r} unknown; use one of {', '.join(THRESHOLDS)}")
    levels = THRESHOLDS[thresholds] if thresholds else None
    if video_scores is not None:
        from pbd_deploy.core.opentad_post import VideoScores

        video_scores = VideoScores.load(video_scores)
    if save_predictions:
        check_folder(save_predictions, "--save-predictions")
    path = Path(model)
    if class_agnostic and path.suffix != ".json":
        raise PbdError(
            "--class-agnostic scores a predictions file; a model's config.json / model.json "
            "says whether it is class-agnostic (class_agnostic), so leave it out"
        )
    if path.is_dir() or path.suffix in (".onnx", ".engine"):
        if not data:
            raise PbdError("evaluating a model needs --data DATA")
        if path.is_dir():
            result, predictions = _evaluate_model_dir(
                path, data, split, levels, device, progress, past_end, workers, subsets,
                video_scores,
            )  # fmt: skip
        else:
            from pbd_deploy.runtime.evaluate import evaluate_artifact

            result, predictions = evaluate_artifact(
                path, data, split, levels, past_end, progress, subsets=subsets,
                video_scores=video_scores,
            )  # fmt: skip
    elif path.suffix == ".json":
        if not annotations:
            raise PbdError("scoring a predictions file needs --annotations ANN.json")
        if video_scores is not None:
            raise PbdError("--video-scores is fused when running a model, not a predictions file")
        levels = levels or THUMOS_THRESHOLDS
        known = load_annotations(annotations, past_end=past_end, subsets=subsets)
        names = None if class_agnostic else known.class_names  # any label is the one class
        predictions = load_predictions(path, names, set(known.videos))
        videos = known.split(split)
        wanted = {v.video_id for v in videos}
        predictions = {k: v for k, v in predictions.items() if k in wanted}
        label = AGNOSTIC_LABEL if class_agnostic else None
        if class_agnostic:
            predictions = {
                k: [{**d, "label": label} for d in found] for k, found in predictions.items()
            }
        result = evaluate_detections(ground_truth(videos, label), predictions, levels)
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


def _evaluate_model_dir(path, data, split, levels, device, progress, past_end, workers, subsets,
                        video_scores):  # fmt: skip
    from pbd_deploy.data import distributed
    from pbd_deploy.data.dataset import TadDataset
    from pbd_deploy.eval.inference import evaluate_model
    from pbd_deploy.models.io import load_model

    device = distributed.setup(device)  # under torchrun: this rank's device
    detector = load_model(path, device)
    config = detector.config
    if video_scores is not None:  # the fused labels are the classifier's, not the model's
        video_scores.check_detector(len(config.class_names))
        config = dataclasses.replace(
            config, class_names=video_scores.class_names, class_agnostic=False
        )
    dataset = TadDataset(data, config, past_end, subsets=subsets)
    return evaluate_model(detector, dataset, split, thresholds=levels, device=device,
                          progress=progress, workers=workers, video_scores=video_scores)  # fmt: skip
