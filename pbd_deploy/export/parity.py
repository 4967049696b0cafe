"""Parity of an exported model with the torch model: raw outputs and final detections."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from pbd_deploy.core.compare import match_detections, match_predictions
from pbd_deploy.core.postprocessors import Postprocess, video_detections, window_candidates
from pbd_deploy.export.onnx import example_input
from pbd_deploy.models.actionformer import point_grid


def random_inputs(model, batches: list[int], window: int) -> list[np.ndarray]:
    """One random (B, ...) input per batch size, seeded (normal noise, like normalised frames)."""
    return [example_input(model, b, window).numpy() for b in batches]


def real_inputs(dataset, videos, batch: int, limit: int) -> list[np.ndarray]:
    """Up to `limit` batches of `batch` real sliding windows of `videos`."""
    # Lazily: a real-size window (768 frames at 160x160) is 236 MB.
    windows = (x for v in videos for _, x, _ in dataset.sliding_windows(v))
    batches = (list(itertools.islice(windows, batch)) for _ in range(limit))
    return [np.stack(b) for b in batches if len(b) == batch]


def output_diff(model, runtime, inputs: list[np.ndarray]) -> dict:
    """Max abs difference between torch and the runtime.

    Returns:
        {"scores": probabilities, "segments": head points, "segments_per_stride": head
        points divided by each point's level stride}. Offsets are multiplied by 2**level,
        so a level-4 point magnifies the same relative rounding 16x; per stride, every level
        is measured on the scale the network regresses it at, which the parity check uses.
    """
    strides = point_grid(model.config.head)[1].numpy()[None, :, None]  # (1, N, 1)
    worst = {"scores": 0.0, "segments": 0.0, "segments_per_stride": 0.0}
    for x in inputs:
        with torch.no_grad():
            ref = [t.numpy() for t in model.predict(torch.from_numpy(x))]
        got = runtime.predict(x)
        seg = np.abs(ref[1] - got[1])
        for key, value in (
            ("scores", np.abs(ref[0] - got[0]).max()),
            ("segments", seg.max()),
            ("segments_per_stride", (seg / strides).max()),
        ):
            worst[key] = max(worst[key], float(value))
    return worst


def parity_error(figures: dict) -> float:
    """The figure the tolerance applies to: worst score or per-stride segment difference."""
    return max(max(d["scores"], d["segments_per_stride"]) for d in figures.values())


def _window_detections(scores, segments, positions, post: Postprocess) -> list[tuple]:
    """Post-process one full window in point units (as if 1 point = 1 s)."""
    cands = window_candidates(
        post, scores, segments, positions, len(positions), lambda p: p, float("inf")
    )
    segs, scs, labels = video_detections(post, [cands])
    return list(zip(labels.tolist(), segs.tolist(), scs.tolist()))


def random_input_detections_match(model, runtime, inputs) -> bool:
    """Detections after the model's post-processing are the same (`core.compare`) for torch
    and runtime."""
    config = model.config.post
    positions = model.positions.cpu().numpy()
    for x in inputs:
        with torch.no_grad():
            ref = [t.numpy() for t in model.predict(torch.from_numpy(x))]
        got = runtime.predict(x)
        for i in range(len(x)):
            mine = _window_detections(got[0][i], got[1][i], positions, config)
            theirs = _window_detections(ref[0][i], ref[1][i], positions, config)
            if not match_detections(mine, theirs, max_detections=config.max_detections):
                return False
    return True


def predictions_match(torch_preds: dict, runtime_preds: dict, config: Postprocess):
    """Per-video detections ({label, segment, score}) of two runs, matched by `core.compare`."""
    return match_predictions(torch_preds, runtime_preds, max_detections=config.max_detections)
