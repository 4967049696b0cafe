"""A dataset directory seen through a model's input spec: windows in, targets out.

Time conventions (shared with decoding in eval): a window starts at input step `s`
(a frame, or a feature row covering `u` frames) and its head has `length` points, each
covering `fpf` frames. Point coordinate x (x = 0 is the first point's centre) maps to
    time = (s * u + (x + 0.5) * fpf) / fps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pbd_deploy.core.annotations import Annotations, VideoInfo, load_annotations
from pbd_deploy.data.features import load_features
from pbd_deploy.data.sampling import crop_segments, sample_window
from pbd_deploy.core.video import decode_video, normalize, take_window
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import DetectorConfig
from pbd_deploy.core import windows


class TadDataset:
    """Videos (or feature files) and annotations of DATA/, prepared for one model config.

    Decoded inputs are cached in memory as uint8 frames (or float features), so each video
    is decoded once per process. `past_end` is what to do with segments that end after their
    video (THUMOS14 has 30): "error", "keep" or "drop" (see `load_annotations`).
    """

    def __init__(self, data_dir: str | Path, config: DetectorConfig, past_end: str = "error"):
        self.root = Path(data_dir)
        if not self.root.is_dir():
            raise PbdError(f"dataset directory {self.root} does not exist")
        self.annotations: Annotations = load_annotations(
            self.root / "annotations.json", past_end=past_end
        )
        self.config = config
        self.input = config.input
        self.spec = windows.WindowSpec.from_model_config(config.to_dict())  # shared with runtime
        self.class_index = {name: i for i, name in enumerate(config.class_names)}
        unknown = sorted(set(self.annotations.class_names) - set(self.class_index))
        if unknown:
            raise PbdError(
                f"{self.root} has labels the model does not know: {unknown[:5]}; "
                f"the model's classes are {config.class_names[:5]}..."
            )
        self._cache: dict[str, tuple[np.ndarray, float]] = {}

    def split(self, role: str) -> list[VideoInfo]:
        return self.annotations.split(role)

    @property
    def step_frames(self) -> float:
        """Frames per input step: 1 for video, feature_stride for features."""
        return self.input.feature_stride if self.input.mode == "features" else 1.0

    def load(self, video: VideoInfo) -> tuple[np.ndarray, float]:
        """The video's whole input, (T, H, W, 3) uint8 or (T, C) float32, and its fps."""
        if video.video_id not in self._cache:
            self._cache[video.video_id] = self._read(video)
        return self._cache[video.video_id]

    def _read(self, video: VideoInfo) -> tuple[np.ndarray, float]:
        if self.input.mode == "features":
            if not video.fps:
                raise PbdError(f"{video.video_id}: feature mode needs 'fps' in annotations.json")
            path = self.root / "features" / f"{video.video_id}.npy"
            return load_features(path, self.input.feature_dim), float(video.fps)
        path = self.root / "videos" / f"{video.video_id}.mp4"
        # Cached at the resized size, not cropped: training takes random crops of it.
        return decode_video(path, fps=self.input.fps, size=self.input.resize)

    def model_input(self, steps: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """A window of raw steps -> the model's input for one sample (no batch axis).

        Frames are centre-cropped, or randomly cropped when `rng` is given (training-time
        augmentation: a shift of the whole window changes no motion pattern).
        """
        if self.input.mode == "features":
            return np.ascontiguousarray(steps.T, dtype=np.float32)  # (C, T)
        crop = self.input.crop
        _, h, w, _ = steps.shape  # (T, H, W, 3)
        if h < crop or w < crop:
            raise PbdError(
                f"frames of {h}x{w} are smaller than the {crop}x{crop} crop; "
                "set input.resize >= input.crop"
            )
        if rng is None:
            return windows.model_input(steps, self.spec)  # centre crop, as the runtime does
        top, left = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        steps = steps[:, top : top + crop, left : left + crop]
        return normalize(steps, self.input.mean, self.input.std)  # (3, T, crop, crop)

    def segments_in_steps(self, video: VideoInfo, fps: float) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth as (M, 2) input-step boundaries and (M,) class ids."""
        segs = [(a.start, a.end) for a in video.annotations]
        labels = [self.class_index[a.label] for a in video.annotations]
        segs = np.asarray(segs, dtype=np.float64).reshape(-1, 2) * fps / self.step_frames
        return segs, np.asarray(labels, dtype=np.int64)

    def training_window(self, video: VideoInfo, rng: np.random.Generator):
        """A random window that keeps actions (ActionFormer-style truncation).

        Returns:
            (model input, segments (M, 2) in head points, labels (M,), valid points).
        """
        data, fps = self.load(video)
        segs, _ = self.segments_in_steps(video, fps)
        window = self.input.window
        start = sample_window(len(data), segs, window, rng)
        steps, valid = take_window(data, start, window)
        points, labels = self.window_targets(video, start)
        scale = self.config.head.length / window  # input steps -> head points
        return self.model_input(steps, rng), points, labels, valid * scale

    def window_targets(self, video: VideoInfo, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth inside the window starting at input step `start`.

        Returns:
            Segments (M, 2) in head points of that window (float32) and labels (M,).
        """
        _, fps = self.load(video)
        segs, labels = self.segments_in_steps(video, fps)
        window = self.input.window
        segs, labels = crop_segments(segs, labels, start, window)
        points = segs * (self.config.head.length / window) - 0.5  # input steps -> head points
        return points.astype(np.float32), labels

    def sliding_windows(self, video: VideoInfo):
        """Yield (start step, model input, valid head points) covering the whole video."""
        data, _ = self.load(video)
        yield from windows.sliding_windows(data, self.spec)

    def points_to_seconds(self, points: np.ndarray, start: int, fps: float) -> np.ndarray:
        """Head-point coordinates of a window starting at input step `start` -> seconds."""
        return windows.points_to_seconds(points, start, fps, self.spec)
