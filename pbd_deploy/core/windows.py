"""Model windows and time mapping in numpy, the same arithmetic as the torch eval path.

Shared by the torch-free runtime and `pbd_deploy.eval.inference`; see the time conventions
in `pbd_deploy.data.dataset`: point x of a window starting at input step s is at
    (s * step_frames + (x + 0.5) * frames_per_point) / fps  seconds,
and, for a video resized to one window (sampling "resize", OpenTAD's `convert_to_seconds`),
    x / head_length * duration  seconds.
With sampling "stride" an input step is every `frame_stride`-th frame of the file and `fps`
is the file's rate over `frame_stride`, so the same formula holds; its windows are placed as
OpenTAD's `SlidingWindowDataset` places them (`window_plan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pbd_deploy.core.postprocess import select_topk
from pbd_deploy.core.video import aligned_window_starts, normalize, take_window, window_starts
from pbd_deploy.errors import PbdError

# A masked model's (OpenTAD's padding mask) second input: valid head points per window,
# int64 (B,); model.json lists it as "valid_input".
VALID_NAME = "valid"


def valid_input(valid_points) -> np.ndarray:
    """Valid head points per window (floats) -> the "valid" input, int64: point i of a window
    is real input iff i < valid, which for integer i is i < ceil(valid)."""
    return np.ceil(np.asarray(valid_points, dtype=np.float64)).astype(np.int64)


@dataclass(frozen=True)
class WindowSpec:
    """The input spec of an exported model, read from model.json's model config."""

    mode: str
    window: int
    stride: int
    fps: float | None
    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    feature_dim: int | None
    feature_stride: float
    head_length: int
    levels: int
    sampling: str = "rate"  # "resize": the whole video as one window; "stride" (InputConfig)
    frame_stride: int = 1  # sampling "stride": every frame_stride-th frame of the file

    @classmethod
    def from_model_config(cls, config: dict) -> "WindowSpec":
        inp, head = config["input"], config["head"]
        return cls(
            mode=inp["mode"],
            sampling=inp.get("sampling", "rate"),  # files written before it existed
            frame_stride=int(inp.get("frame_stride", 1)),
            window=int(inp["window"]),
            stride=int(inp["stride"]),
            fps=inp.get("fps"),
            resize=int(inp["resize"]),
            crop=int(inp["crop"]),
            mean=tuple(inp["mean"]),
            std=tuple(inp["std"]),
            feature_dim=inp.get("feature_dim"),
            feature_stride=float(inp.get("feature_stride", 1.0)),
            head_length=int(head["length"]),
            levels=int(head["levels"]),
        )

    @property
    def step_frames(self) -> float:
        """Frames per input step: 1 for video, feature_stride for features."""
        return self.feature_stride if self.mode == "features" else 1.0

    @property
    def frames_per_point(self) -> float:
        return self.window * self.step_frames / self.head_length


def point_positions(spec: WindowSpec) -> np.ndarray:
    """(N,) level-0 position of every output point, in the order the head emits them."""
    levels = [
        np.arange(math.ceil(spec.head_length / 2**lvl), dtype=np.float32) * 2**lvl
        for lvl in range(spec.levels)
    ]
    return np.concatenate(levels)


def model_input(steps: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """Raw window steps -> one model input: (3, T, crop, crop) float32 or (C, T) features."""
    if spec.mode == "features":
        return np.ascontiguousarray(steps.T, dtype=np.float32)  # (C, T)
    _, h, w, _ = steps.shape  # (T, H, W, 3)
    crop = spec.crop
    if h < crop or w < crop:
        raise PbdError(f"frames of {h}x{w} are smaller than the model's {crop}x{crop} crop")
    top, left = (h - crop) // 2, (w - crop) // 2  # centre crop, as in evaluation
    return normalize(steps[:, top : top + crop, left : left + crop], spec.mean, spec.std)


def window_plan(num_steps: int, spec: WindowSpec) -> list[int]:
    """Start steps of the windows of a video of `num_steps` input steps, in order.

    Sampling "stride" places them as OpenTAD's `SlidingWindowDataset` (the last window
    aligned to the video's end, repeated when it coincides with the one before:
    `core.video.aligned_window_starts`); "rate" and "resize" as `core.video.window_starts`.
    """
    if spec.sampling == "stride":
        return aligned_window_starts(num_steps, spec.window, spec.stride)
    return window_starts(num_steps, spec.window, spec.stride)


def sliding_windows(data: np.ndarray, spec: WindowSpec) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield (start step, model input, valid head points) covering all of `data` (T, ...)."""
    scale = spec.head_length / spec.window
    for start in window_plan(len(data), spec):
        steps, valid = take_window(data, start, spec.window)
        yield start, model_input(steps, spec), valid * scale


def points_to_seconds(
    points: np.ndarray, start: int, fps: float, spec: WindowSpec, duration: float | None = None
) -> np.ndarray:
    """Head-point coordinates of a window starting at input step `start` -> seconds.

    A resized video (sampling "resize") maps by its `duration` alone, in float32 as
    OpenTAD's `convert_to_seconds` does: points / head_length * duration.
    """
    if spec.sampling == "resize":
        if duration is None:
            raise PbdError("a resized video's points map to seconds by its duration; pass it")
        return np.asarray(points, np.float32) / np.float32(spec.head_length) * np.float32(duration)
    return (start * spec.step_frames + (points + 0.5) * spec.frames_per_point) / fps


def window_candidates(scores, segments, positions, valid_points, to_seconds, duration, config):
    """Candidates of one window, in seconds, before NMS.

    Args:
        scores: (N, K) probabilities; segments: (N, 2) in head points; positions: (N,).
        valid_points: points of the window that hold real (not padded) input.
        to_seconds: maps head-point coordinates to seconds for this window.
        duration: the video's length in seconds; segments are clipped to it.
        config: a PostprocessConfig (top-k and threshold).
    """
    keep = positions < valid_points
    secs = np.clip(to_seconds(segments[keep]), 0.0, duration)
    return select_topk(scores[keep], secs, config)
