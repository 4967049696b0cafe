"""A dataset directory seen through a model's input spec: windows in, targets out.

Time conventions (shared with decoding in eval): a window starts at input step `s`
(a frame, or a feature row covering `u` frames) and its head has `length` points, each
covering `fpf` frames. Point coordinate x (x = 0 is the first point's centre) maps to
    time = (s * u + (x + 0.5) * fpf) / fps.
With sampling "resize" a video is one window of `window` frames picked over its whole
length, and x maps to x / length * duration (OpenTAD's resize convention), its ground
truth to clip(t / duration, 0, 1) * length.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np

from pbd_deploy.core import windows
from pbd_deploy.core.annotations import Annotations, VideoInfo, load_annotations
from pbd_deploy.core.features import load_features
from pbd_deploy.core.video import (
    decode_resized,
    decode_video,
    normalize,
    resize_indices,
    take_window,
)
from pbd_deploy.data.augment import CROP_RATIO, Augment, apply_augment, draw_augment
from pbd_deploy.data.frames import VideoIndex, decoded_bytes, index_video, read_steps
from pbd_deploy.data.sampling import crop_segments, sample_window
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import DetectorConfig


class TadDataset:
    """Videos (or feature files) and annotations of DATA/, prepared for one model config.

    Windows are read on demand: a video's packet index (timestamps only) is built once per
    process, and a window decodes only its own frames (`data.frames`). Whole decoded videos
    are kept in memory only while they are small: each at most 1/8 of `cache_mb`, all
    together at most `cache_mb` per process (least recently used first out). `past_end` is
    what to do with segments that end after their video (THUMOS14 has 30): "error", "keep"
    or "drop" (see `load_annotations`); `subsets` which split role each annotation subset
    feeds (`--subsets`: a preset name or SUBSET=ROLE pairs, see `subset_roles`).
    """

    def __init__(
        self, data_dir: str | Path, config: DetectorConfig, past_end: str = "error",
        cache_mb: float = 512, subsets: str = "default",
    ):  # fmt: skip
        self.root = Path(data_dir)
        if not self.root.is_dir():
            raise PbdError(f"dataset directory {self.root} does not exist")
        self.annotations: Annotations = load_annotations(
            self.root / "annotations.json", past_end=past_end, subsets=subsets
        )
        self.config = config
        self.input = config.input
        self.spec = windows.WindowSpec.from_model_config(config.to_dict())  # shared with runtime
        self.class_index = {name: i for i, name in enumerate(config.class_names)}
        if config.class_agnostic:  # every annotated label is the model's one class
            self.class_index = dict.fromkeys(self.annotations.class_names, 0)
        unknown = sorted(set(self.annotations.class_names) - set(self.class_index))
        if unknown:
            raise PbdError(
                f"{self.root} has labels the model does not know: {unknown[:5]}; "
                f"the model's classes are {config.class_names[:5]}..."
            )
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()  # LRU
        self._index: dict[str, VideoIndex | None] = {}

    def split(self, role: str) -> list[VideoInfo]:
        return self.annotations.split(role)

    @property
    def step_frames(self) -> float:
        """Frames per input step: 1 for video, feature_stride for features."""
        return self.input.feature_stride if self.input.mode == "features" else 1.0

    def _video_path(self, video: VideoInfo) -> Path:
        return self.root / "videos" / f"{video.video_id}.mp4"

    @property
    def resized(self) -> bool:
        """Each video is one window of `window` frames picked over its whole length."""
        return self.input.sampling == "resize"

    def index(self, video: VideoInfo) -> VideoIndex | None:
        """The video's packet index (None in feature mode or for files without timestamps)."""
        if self.input.mode == "features":
            return None
        if video.video_id not in self._index:
            index = index_video(self._video_path(video), self.input.fps)
            if index is not None and self.resized:  # its steps: the picked source frames
                picked = index.source[resize_indices(index.steps, self.input.window)]
                rate = self.input.window * index.fps / index.steps  # keeps the video's length
                index = replace(index, source=picked, fps=rate)
            elif index is not None and self.input.sampling == "stride":  # frames 0, k, 2k, ...
                k = self.input.frame_stride
                index = replace(index, source=index.source[::k], fps=index.fps / k)
            self._index[video.video_id] = index
        return self._index[video.video_id]

    def info(self, video: VideoInfo) -> tuple[int, float]:
        """(input steps, fps) of a video without decoding it (feature files are read)."""
        index = self.index(video)
        if index is None:
            data, fps = self.load(video)
            return len(data), fps
        return index.steps, index.fps

    def frame_shape(self, video: VideoInfo) -> tuple[int, int]:
        """(height, width) of the decoded, resized frames."""
        index = self.index(video)
        return index.shape(self.input.resize) if index else self.load(video)[0].shape[1:3]

    def read(self, video: VideoInfo, start: int, count: int) -> np.ndarray:
        """Input steps [start, start + count) of a video, clipped at its end."""
        index = self.index(video)
        cached = self._cache.get(video.video_id)
        # A resized video is one window: decoded by decode_resized, the runtime's reader.
        if index is None or cached is not None or self.resized:
            return self.load(video)[0][start : start + count]
        if decoded_bytes(index, self.input.resize) * 8 <= self.cache_bytes:
            return self.load(video)[0][start : start + count]  # small: decode once, keep
        return read_steps(index, start, count, self.input.resize)

    def load(self, video: VideoInfo) -> tuple[np.ndarray, float]:
        """The video's whole input, (T, H, W, 3) uint8 or (T, C) float32, and its fps.

        Kept in the size-capped cache; training and evaluation read windows (`read`).
        """
        entry = self._cache.get(video.video_id)
        if entry is None:
            entry = self._cache[video.video_id] = self._read(video)
            while len(self._cache) > 1 and self._cached_bytes() > self.cache_bytes:
                self._cache.popitem(last=False)
        self._cache.move_to_end(video.video_id)
        return entry

    def _cached_bytes(self) -> int:
        return sum(data.nbytes for data, _ in self._cache.values())

    def _read(self, video: VideoInfo) -> tuple[np.ndarray, float]:
        if self.input.mode == "features":
            if not video.fps:
                raise PbdError(f"{video.video_id}: feature mode needs 'fps' in annotations.json")
            path = self.root / "features" / f"{video.video_id}.npy"
            return load_features(path, self.input.feature_dim), float(video.fps)
        # Kept at the resized size, not cropped: training takes random crops of it.
        if self.resized:
            return decode_resized(self._video_path(video), self.input.window, self.input.resize)
        return decode_video(
            self._video_path(video),
            fps=self.input.fps,
            size=self.input.resize,
            frame_stride=self.input.frame_stride,
        )

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
        """Ground truth as (M, 2) input-step boundaries and (M,) class ids (all 0 for a
        class-agnostic model, each segment once).

        A resized video's steps span its annotated duration: clip(t / duration, 0, 1) *
        window, as OpenTAD's resize loader maps ground truth.
        """
        pairs = [((a.start, a.end), self.class_index[a.label]) for a in video.annotations]
        if self.config.class_agnostic:  # one segment under two labels is one instance
            pairs = list(dict.fromkeys(pairs))  # (OpenTAD's filter_same_annotation)
        segs, labels = [p[0] for p in pairs], [p[1] for p in pairs]
        segs = np.asarray(segs, dtype=np.float64).reshape(-1, 2)
        if self.resized:
            segs = np.clip(segs / video.duration, 0.0, 1.0) * self.input.window
        else:
            segs = segs * fps / self.step_frames
        return segs, np.asarray(labels, dtype=np.int64)

    def draw_window(self, video: VideoInfo, rng: np.random.Generator, augment: bool = False):
        """Draw a training window without decoding it: (start, steps, crop).

        The start keeps actions (ActionFormer-style truncation). `crop` is the (top, left)
        of a random crop, None for features, or with `augment` the draws of the paper
        recipe (`data.augment`), which also cuts a video shorter than the window to
        90-100 % of its length. Without `augment` the random draws are those
        `training_window` always made, in the same order.
        """
        steps, fps = self.info(video)
        window = self.input.window
        if augment and steps <= window and not self.resized:  # random truncation, crop ratio
            low, high = (max(1, round(r * steps)) for r in CROP_RATIO)
            count = int(rng.integers(low, min(high, steps) + 1))
            start = int(rng.integers(0, steps - count + 1))
        else:
            segs, _ = self.segments_in_steps(video, fps)
            start, count = sample_window(steps, segs, window, rng), window
        if self.input.mode == "features":
            return start, count, None
        h, w = self.frame_shape(video)
        crop = self.input.crop
        if h < crop or w < crop:
            raise PbdError(
                f"frames of {h}x{w} are smaller than the {crop}x{crop} crop; "
                "set input.resize >= input.crop"
            )
        if augment:
            return start, count, draw_augment(rng, h, w)
        return start, count, (int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1)))

    def training_sample(self, video: VideoInfo, start: int, count: int, crop):
        """The drawn window (`draw_window`): (model input, segments (M, 2) in head points,
        labels (M,), valid points). Decodes only this window's frames."""
        window, size = self.input.window, self.input.crop
        steps, valid = take_window(self.read(video, start, count), 0, window)
        if crop is None:
            x = self.model_input(steps)
        elif isinstance(crop, Augment):
            x = apply_augment(steps, crop, size, self.input.mean, self.input.std)
        else:
            top, left = crop
            steps = steps[:, top : top + size, left : left + size]
            x = normalize(steps, self.input.mean, self.input.std)  # (3, T, crop, crop)
        points, labels = self.window_targets(video, start, count)
        return x, points, labels, valid * (self.config.head.length / window)

    def training_window(self, video: VideoInfo, rng: np.random.Generator):
        """A random window that keeps actions, with a random crop (see `draw_window`)."""
        return self.training_sample(video, *self.draw_window(video, rng))

    def window_targets(self, video: VideoInfo, start: int, count: int | None = None):
        """Ground truth inside the window starting at input step `start` (its first `count`
        steps; default: all of it).

        Returns:
            Segments (M, 2) in head points of that window (float32) and labels (M,).
        """
        _, fps = self.info(video)
        segs, labels = self.segments_in_steps(video, fps)
        window = self.input.window
        segs, labels = crop_segments(segs, labels, start, count or window)
        points = segs * (self.config.head.length / window)  # input steps -> head points
        if not self.resized:  # point x covers steps around x + 0.5 (module docstring)
            points -= 0.5
        return points.astype(np.float32), labels

    def window_starts(self, video: VideoInfo) -> list[int]:
        """Starts of the sliding windows that cover the whole video (as at inference):
        `core.windows.window_plan`, OpenTAD's placement for sampling "stride"."""
        return windows.window_plan(self.info(video)[0], self.spec)

    def eval_window(self, video: VideoInfo, start: int) -> tuple[np.ndarray, float]:
        """(model input, valid head points) of the sliding window starting at `start`."""
        window = self.input.window
        steps, valid = take_window(self.read(video, start, window), 0, window)
        return windows.model_input(steps, self.spec), valid * (self.config.head.length / window)

    def sliding_windows(self, video: VideoInfo):
        """Yield (start step, model input, valid head points) covering the whole video,
        decoding one window at a time."""
        for start in self.window_starts(video):
            yield (start, *self.eval_window(video, start))

    def points_to_seconds(
        self, points: np.ndarray, start: int, fps: float, duration: float | None = None
    ) -> np.ndarray:
        """Head-point coordinates of a window starting at input step `start` -> seconds
        (a resized video's by its `duration`)."""
        return windows.points_to_seconds(points, start, fps, self.spec, duration)
