"""Decode only the frames a window needs: a packet index per video, then seek + decode.

Why seek rather than an on-disk cache of decoded frames: decoded uint8 THUMOS14 at 182 px
and 30 fps is about 300 GB, so a capped cache would evict and re-decode whole videos all
the time, while a seek decodes at most one group of pictures (x264: <= 250 frames) more than
the window itself. Small videos are still kept whole in memory by `TadDataset` (its cache
has a byte cap), so the tiny CPU benchmark decodes each video once, as before.

The index reads packet timestamps only (no decoding), and reproduces the frame choice of
`core.video.decode_video` exactly: output step k at fps takes the latest source frame whose
time (relative to the first frame) is at or before k / fps; the video ends one source frame
period after its last frame. The tests compare both paths frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pbd_deploy.core.video import decode_video, open_video, resized_shape
from pbd_deploy.errors import PbdError

_TIME_EPS = 1e-6  # as in core.video: absorbs the rounding of rational timestamps


@dataclass(frozen=True)
class VideoIndex:
    """Where each output step of a video comes from, without decoding it.

    Attributes:
        pts: (F,) presentation timestamps of the source frames, increasing.
        source: (T,) the source frame (position in `pts`) of each output step.
        fps: output frame rate (the requested one, or the file's).
        width, height: source frame size in pixels.
    """

    path: str
    pts: np.ndarray
    source: np.ndarray
    fps: float
    width: int
    height: int

    @property
    def steps(self) -> int:
        return len(self.source)

    def shape(self, size: int | None) -> tuple[int, int]:
        """(height, width) of the frames after resizing the short side to `size`."""
        return resized_shape(self.height, self.width, size)


def index_video(path: str | Path, fps: float | None = None) -> VideoIndex | None:
    """The packet index of a video; None when its packets lack timestamps (then decode all)."""
    with open_video(path) as (container, stream):
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        packets = [p.pts for p in container.demux(stream) if p.size]
        time_base = stream.time_base
        width, height = stream.codec_context.width, stream.codec_context.height
    if not packets or any(p is None for p in packets) or not rate or not width:
        return None
    pts = np.sort(np.asarray(packets, dtype=np.int64))
    if fps is None:
        return VideoIndex(str(path), pts, np.arange(len(pts)), float(rate), width, height)
    # The same float arithmetic as core.video._timed_frames / _resample.
    times = np.array([float(int(p) * time_base) for p in pts])
    times -= times[0]
    step = 1.0 / fps
    end = times[-1] + 1.0 / float(rate)
    k = np.arange(int(end * fps) + 2)
    k = k[k * step + _TIME_EPS < end]  # every output instant before the end
    source = np.searchsorted(times, k * step + _TIME_EPS, side="right") - 1
    return VideoIndex(str(path), pts, source, float(fps), width, height)


def read_steps(index: VideoIndex, start: int, count: int, size: int | None) -> np.ndarray:
    """Output steps [start, start + count) (clipped at the end) as (n, H, W, 3) uint8.

    Seeks to the keyframe before the first needed frame and decodes up to the last one.
    """
    wanted = index.source[start : start + count]  # (n,) source frame positions
    if not len(wanted):
        raise PbdError(f"window start {start} outside the video's {index.steps} frames")
    needed = {int(index.pts[j]): None for j in np.unique(wanted)}
    first, last = min(needed), max(needed)
    height, width = index.shape(size)
    with open_video(index.path) as (container, stream):
        for seek in (True, False):  # fall back to decoding from the start
            container.seek(first if seek else 0, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None or frame.pts > last:
                    break
                if frame.pts in needed:
                    needed[frame.pts] = frame.to_ndarray(width=width, height=height, format="rgb24")
            if all(v is not None for v in needed.values()):
                break
    if any(v is None for v in needed.values()):
        # Timestamps the decoder does not reproduce: decode the whole file once instead.
        frames, _ = decode_video(index.path, fps=index.fps, size=size)
        return frames[start : start + count]
    return np.stack([needed[int(index.pts[j])] for j in wanted])  # (n, H, W, 3)


def decoded_bytes(index: VideoIndex, size: int | None) -> int:
    """Bytes of the whole video decoded to uint8 at `size`."""
    height, width = index.shape(size)
    return index.steps * height * width * 3
