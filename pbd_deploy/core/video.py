"""Decode videos with PyAV into uint8 frame arrays, cut model windows, write test videos."""

from __future__ import annotations

import itertools
import logging
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import numpy as np

from pbd_deploy.core.atomic import write_file
from pbd_deploy.errors import PbdError

log = logging.getLogger(__name__)

# VideoMAE / ImageNet statistics in 0..255 units.
VIDEOMAE_MEAN = (123.675, 116.28, 103.53)
VIDEOMAE_STD = (58.395, 57.12, 57.375)

# Timestamps are rationals turned into floats; this absorbs the rounding so a frame at
# exactly an output instant counts as "at or before" it.
_TIME_EPS = 1e-6


def decode_video(
    path: str | Path,
    fps: float | None = None,
    size: int | None = None,
    crop: int | None = None,
    frame_stride: int = 1,
) -> tuple[np.ndarray, float]:
    """Decode every frame of a video into RGB uint8.

    Args:
        path: the video file.
        fps: resample to this rate by timestamps (each output instant takes the latest
            frame at or before it); None keeps every decoded frame.
        frame_stride: keep decoded frames 0, k, 2k, ... (OpenTAD's sliding-window input,
            `LoadFrames(method="sliding_window")`); the rate is then the file's over k.
            Not with `fps`.
        size: resize so the short side is `size` pixels (aspect kept); None keeps it.
        crop: center-crop to `crop` x `crop` after resizing; None skips the crop.

    Returns:
        frames (T, H, W, 3) uint8 ((T, crop, crop, 3) with crop), and the frame rate.

    Raises:
        PbdError: missing file, undecodable file, or a crop larger than the frame.
    """
    checks = (("fps", fps), ("size", size), ("crop", crop), ("frame_stride", frame_stride))
    for name, value in checks:
        if value is not None and value <= 0:
            raise PbdError(f"decode_video: {name} must be positive, got {value}")
    if fps is not None and frame_stride != 1:
        raise PbdError(
            "decode_video: give fps (resample) or frame_stride (every k-th frame), not both"
        )
    path = Path(path)
    with open_video(path) as (container, stream):
        src_fps = _stream_fps(stream, path)
        timed = _timed_frames(container.decode(stream), stream.time_base, src_fps)
        if fps is not None:
            picked = _resample(timed, fps, src_fps)
        else:
            picked = itertools.islice((f for f, _ in timed), 0, None, frame_stride)
        frames = _convert(picked, size, crop, path)
    if not len(frames):
        raise _undecodable(path, "no frames decoded")
    return frames, float(fps) if fps is not None else src_fps / frame_stride


def resize_indices(total: int, frames: int) -> np.ndarray:
    """The source frames OpenTAD's `LoadFrames(method="resize")` picks: `frames` positions
    spread over a video of `total` frames (the centres of equal spans, rounded).

    The same numpy calls as OpenTAD (arange over a float step, clip, round half to even),
    so the positions equal OpenTAD's bit for bit (tests/fixtures/opentad/resize.json). Where
    the float step makes arange one element too long (OpenTAD then fails an assert), the
    first `frames` are kept.
    """
    if total < 1 or frames < 1:
        raise PbdError(f"cannot pick {frames} frames from a video of {total} frames")
    stride = total / frames
    idx = np.arange(stride / 2 - 0.5, total + stride / 2 - 0.5, stride)[:frames]
    return np.clip(idx, 0, total - 1).round().astype(np.int64)


def decode_resized(
    path: str | Path, frames: int, size: int | None = None
) -> tuple[np.ndarray, float]:
    """The whole video as `frames` frames at the `resize_indices` positions of all its frames.

    Frames are counted from the packets without decoding (as OpenTAD's decord reader
    does), then the video is decoded up to the last picked frame and only the picked frames
    are converted, so a long video never sits in memory whole.

    Returns:
        frames (frames, H, W, 3) uint8 and their rate: `frames` over the video's duration
        (its frame count over its frame rate), so len / rate is the video's length.
    """
    path = Path(path)
    with open_video(path) as (container, stream):
        src_fps = _stream_fps(stream, path)
        total = sum(1 for packet in container.demux(stream) if packet.size)
    picked = _decode_positions(path, resize_indices(total, frames), size) if total else None
    if picked is None:  # the decoder gave fewer frames than packets: pick from those
        every, _ = decode_video(path, size=size)
        total = len(every)
        picked = every[resize_indices(total, frames)]
    return picked, frames * src_fps / total


def _decode_positions(path: Path, positions: np.ndarray, size: int | None) -> np.ndarray | None:
    """Frames at decode positions `positions` (any order, repeats allowed) as (n, H, W, 3)
    uint8; None when the video has fewer decodable frames than the last position."""
    wanted = {int(i): None for i in positions}
    last = max(wanted)
    with open_video(path) as (container, stream):
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                wanted[i] = _to_rgb(frame, size, None, path)
            if i >= last:
                break
    if any(v is None for v in wanted.values()):
        return None
    return np.stack([wanted[int(i)] for i in positions])


def normalize(
    frames: np.ndarray,
    mean: Sequence[float] = VIDEOMAE_MEAN,
    std: Sequence[float] = VIDEOMAE_STD,
) -> np.ndarray:
    """Normalize uint8 RGB frames to the channels-first float input of a video model.

    Args:
        frames: (T, H, W, 3) uint8.
        mean: per-channel mean in 0..255 units.
        std: per-channel standard deviation in 0..255 units.

    Returns:
        (3, T, H, W) float32.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise PbdError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    out = (frames.astype(np.float32) - m) / s  # (T, H, W, 3)
    return np.ascontiguousarray(out.transpose(3, 0, 1, 2))  # (3, T, H, W)


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """Start frames of sliding windows that together cover every frame.

    Windows step by `stride`; one more window aligned to the video end is added when
    the regular steps stop short of it. A video shorter than a window gives [0].

    Args:
        num_frames: frames in the video.
        window: frames per window.
        stride: frames between consecutive starts; at most `window`.

    Returns:
        Increasing start frames.
    """
    if window <= 0 or stride <= 0:
        raise PbdError(f"window ({window}) and stride ({stride}) must be positive")
    if stride > window:
        raise PbdError(f"stride {stride} > window {window} would skip frames; lower the stride")
    if num_frames <= window:
        return [0]
    last = num_frames - window
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def aligned_window_starts(num_steps: int, window: int, stride: int) -> list[int]:
    """Window starts as OpenTAD's `SlidingWindowDataset.split_video_to_windows` places them.

    Windows start at idx * stride for idx < max(1, num_steps // stride); the first one that
    runs past the end is moved back to end at the last step (start 0 if the video is
    shorter than a window) and is the last. When `num_steps` is a multiple of `stride` (and
    at least a window) that moved window starts where the one before it did, and OpenTAD
    evaluates it twice: so is it here (its candidates go into the NMS twice).

    Args:
        num_steps: input steps of the video (OpenTAD's snippets).
        window: steps per window; stride: steps between starts, at most `window`.
    """
    if window <= 0 or stride <= 0:
        raise PbdError(f"window ({window}) and stride ({stride}) must be positive")
    if stride > window:
        raise PbdError(f"stride {stride} > window {window} would skip frames; lower the stride")
    starts = []
    for idx in range(max(1, num_steps // stride)):
        start = idx * stride
        if start + window > num_steps:  # the last window: aligned to the end
            starts.append(max(0, num_steps - window))
            break
        starts.append(start)
    return starts


def take_window(frames: np.ndarray, start: int, window: int) -> tuple[np.ndarray, int]:
    """Cut `window` frames from `start`, padding past the end by repeating the last frame.

    Repeating the last frame (rather than black frames) keeps padded inputs within the
    statistics the model was trained on; callers mask by the valid count. Works on any
    array whose first axis is time, e.g. (T, H, W, 3) frames or (T, C) features.

    Args:
        frames: (T, ...) array.
        start: first frame, 0 <= start < T.
        window: frames to return.

    Returns:
        ((window, ...) array, number of valid, non-padded frames).
    """
    total = len(frames)
    if not 0 <= start < total:
        raise PbdError(f"window start {start} outside the video's {total} frames")
    chunk = frames[start : start + window]
    valid = len(chunk)
    if valid < window:
        pad = np.repeat(chunk[-1:], window - valid, axis=0)
        chunk = np.concatenate([chunk, pad], axis=0)
    return chunk, valid


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: float, codec: str = "libx264"
) -> int:
    """Write RGB frames to an .mp4 (yuv420p), atomically; returns the number of frames.

    Frames are streamed to the encoder, so a generator writes a long video without holding
    it in memory. yuv420p needs even dimensions, so an odd height or width gets its last
    row or column repeated once. x264 runs on one thread (crf 18, preset ultrafast): the
    same frames always give the same bytes. The file appears under its final name only
    when complete; a bad frame met half-way leaves nothing behind.

    Args:
        path: the output file.
        frames: a (T, H, W, 3) uint8 array or any iterable of (H, W, 3) uint8 frames.
        fps: frame rate.
        codec: encoder; falls back to "mpeg4" when it is not available in this FFmpeg.
    """
    if not fps > 0:
        raise PbdError(f"write_video: fps must be positive, got {fps}")
    frames = iter(frames)
    first = _check_frame(next(frames, None), None)
    codec = pick_codec(codec)
    path = Path(path)
    written = []

    def encode(tmp: Path) -> None:
        written.append(_encode(str(tmp), first, frames, fps, codec))

    try:
        write_file(path, encode, what="video ")
    except av.FFmpegError as exc:
        raise PbdError(f"cannot write video {path}: {exc} (check the output folder)") from None
    return written[0]


def pick_codec(codec: str) -> str:
    """`codec` when this FFmpeg build has its encoder, else "mpeg4" (always built in)."""
    if codec in av.codecs_available:
        return codec
    log.info("codec %s not available in this FFmpeg build; using mpeg4", codec)
    return "mpeg4"


@contextmanager
def open_video(path: str | Path):
    """(container, first video stream) of `path`, with frame and slice threads on.

    A missing file, a file without a video stream and PyAV's errors inside the block
    become one-line PbdErrors naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise PbdError(f"video not found: {path} (check the path)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _undecodable(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame+slice threads: several times faster
            yield container, stream
    except PbdError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        # FFmpeg's message repeats the errno and path; its strerror alone is the reason.
        raise _undecodable(path, getattr(exc, "strerror", None) or str(exc)) from None


def resized_shape(height: int, width: int, size: int | None) -> tuple[int, int]:
    """(height, width) after resizing the short side to `size` (aspect kept, rounded)."""
    if not size:
        return height, width
    scale = size / min(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _undecodable(path: Path, reason: str) -> PbdError:
    return PbdError(f"cannot decode video {path}: {reason} (re-encode it or remove it)")


def _stream_fps(stream, path: Path) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise _undecodable(path, "the stream has no frame rate")
    return float(rate)


def _timed_frames(frames, time_base, src_fps: float) -> Iterator[tuple[object, float]]:
    # Times relative to the first frame, so streams starting at a nonzero pts line up
    # with output instant 0. Frames without a pts get one from their index.
    origin = None
    for i, frame in enumerate(frames):
        t = float(frame.pts * time_base) if frame.pts is not None else i / src_fps
        origin = t if origin is None else origin
        yield frame, t - origin


def _resample(timed: Iterator[tuple[object, float]], fps: float, src_fps: float):
    # Streaming, so only the frames actually emitted get converted to RGB arrays.
    step = 1.0 / fps
    k = 0
    prev, prev_t = None, 0.0
    for frame, t in timed:
        while prev is not None and k * step + _TIME_EPS < t:
            yield prev
            k += 1
        prev, prev_t = frame, t
    if prev is None:
        return
    end = prev_t + 1.0 / src_fps  # the last frame lasts one source frame period
    while k * step + _TIME_EPS < end:
        yield prev
        k += 1


def _to_rgb(frame, size: int | None, crop: int | None, path: Path) -> np.ndarray:
    height, width = resized_shape(frame.height, frame.width, size)
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24")  # (H, W, 3) uint8
    if not crop:
        return rgb
    if crop > height or crop > width:
        raise PbdError(
            f"crop {crop} is larger than the {width}x{height} frames of {path}; set size >= {crop}"
        )
    top, left = (height - crop) // 2, (width - crop) // 2
    return rgb[top : top + crop, left : left + crop]


def _convert(picked, size: int | None, crop: int | None, path: Path) -> np.ndarray:
    # Upsampling yields the same source frame several times in a row; convert it once.
    arrays: list[np.ndarray] = []
    last_frame = None
    for frame in picked:
        if frame is not last_frame:
            rgb = _to_rgb(frame, size, crop, path)  # (H, W, 3) uint8
            last_frame = frame
        arrays.append(rgb)
    return np.stack(arrays) if arrays else np.zeros((0, 0, 0, 3), np.uint8)  # (T, H, W, 3)


def _check_frame(frame, shape: tuple | None) -> np.ndarray:
    """A (H, W, 3) uint8 frame, of the first frame's shape when `shape` is given."""
    ok = (
        isinstance(frame, np.ndarray)
        and frame.ndim == 3
        and frame.shape[-1] == 3
        and frame.dtype == np.uint8
        and (shape is None or frame.shape == shape)
    )
    if not ok:
        got = "no frames" if frame is None else f"{getattr(frame, 'shape', type(frame))}"
        got += f" {frame.dtype}" if isinstance(frame, np.ndarray) else ""
        want = f"{shape} uint8" if shape else "(H, W, 3) uint8"
        raise PbdError(f"write_video needs {want} frames (a non-empty video), got {got}")
    return frame


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w, _ = frame.shape
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    return np.pad(frame, pad, mode="edge") if h % 2 or w % 2 else frame


def _encode(tmp: str, first: np.ndarray, rest: Iterator[np.ndarray], fps: float, codec: str) -> int:
    rate = Fraction(fps).limit_denominator(1001)
    height, width = first.shape[0] + first.shape[0] % 2, first.shape[1] + first.shape[1] % 2
    # One x264 thread makes the output bytes reproducible (and is faster on small frames).
    options = {"crf": "18", "preset": "ultrafast", "threads": "1"} if codec == "libx264" else {}
    with av.open(tmp, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        if codec == "mpeg4":
            stream.bit_rate = int(40 * width * height * rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        count = 0
        for rgb in itertools.chain([first], rest):  # (H, W, 3) uint8
            rgb = _pad_even(_check_frame(rgb, first.shape))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = count, 1 / rate
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode())
    return count
