"""Parity of an exported model with the torch model: raw outputs and final detections.

A model input here is an array (B, ...) or, for a masked model (OpenTAD's padding mask),
a pair (array, valid head points (B,) int64).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from pbd_deploy.core.compare import match_detections, match_predictions
from pbd_deploy.core.postprocessors import Postprocess, video_detections, window_candidates
from pbd_deploy.core.windows import valid_input
from pbd_deploy.export.onnx import example_input, example_valid
from pbd_deploy.models.actionformer import point_grid


def split_input(item) -> tuple[np.ndarray, np.ndarray | None]:
    """A model input -> (array, valid head points or None)."""
    return (item, None) if isinstance(item, np.ndarray) else item


def torch_predict(model, item) -> list[np.ndarray]:
    x, valid = split_input(item)
    valid = None if valid is None else torch.from_numpy(valid)
    with torch.no_grad():
        return [t.numpy() for t in model.predict(torch.from_numpy(x), valid)]


def random_inputs(model, batches: list[int], window: int) -> list:
    """One random (B, ...) input per batch size, seeded (normal noise, like normalised frames);
    a masked model's first window is full, the others padded (`onnx.example_valid`)."""
    if not model.masked:
        return [example_input(model, b, window).numpy() for b in batches]
    return [(example_input(model, b, window).numpy(), example_valid(model, b).numpy())
            for b in batches]  # fmt: skip


def real_inputs(dataset, videos, batch: int, limit: int, masked: bool = False) -> list:
    """Up to `limit` batches of `batch` real sliding windows of `videos` (with their valid
    head points when `masked`)."""
    # Lazily: a real-size window (768 frames at 160x160) is 236 MB.
    windows = ((x, v) for video in videos for _, x, v in dataset.sliding_windows(video))
    batches = (list(itertools.islice(windows, batch)) for _ in range(limit))
    out = []
    for b in batches:
        if len(b) == batch:
            x = np.stack([w[0] for w in b])
            valid = valid_input([w[1] for w in b])
            out.append((x, valid) if masked else x)
    return out


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
    for item in inputs:
        ref = torch_predict(model, item)
        got = runtime.predict(*split_input(item))
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


def _window_detections(scores, segments, positions, post: Postprocess, valid) -> list[tuple]:
    """Post-process one window in point units (as if 1 point = 1 s)."""
    cands = window_candidates(post, scores, segments, positions, valid, lambda p: p, float("inf"))
    segs, scs, labels = video_detections(post, [cands])
    return list(zip(labels.tolist(), segs.tolist(), scs.tolist()))


def random_input_detections_match(model, runtime, inputs) -> bool:
    """Detections after the model's post-processing are the same (`core.compare`) for torch
    and runtime."""
    config = model.config.post
    positions = model.positions.cpu().numpy()
    for item in inputs:
        x, valid = split_input(item)
        ref = torch_predict(model, item)
        got = runtime.predict(x, valid)
        for i in range(len(x)):
            v = len(positions) if valid is None else valid[i]
            mine = _window_detections(got[0][i], got[1][i], positions, config, v)
            theirs = _window_detections(ref[0][i], ref[1][i], positions, config, v)
            if not match_detections(mine, theirs, max_detections=config.max_detections):
                return False
    return True


def predictions_match(torch_preds: dict, runtime_preds: dict, config: Postprocess):
    """Per-video detections ({label, segment, score}) of two runs, matched by `core.compare`."""
    return match_predictions(torch_preds, runtime_preds, max_detections=config.max_detections)
