"""Training-time window sampling that keeps actions in view.

Long videos are trained on random fixed-length windows. A purely random window often
holds no action at all, so (like ActionFormer's truncate_feats and AdaTAD) the start is
redrawn until the window keeps a good part of at least one action.
"""

from __future__ import annotations

import numpy as np

from pbd_deploy.errors import PbdError


def sample_window(
    num_frames: int,
    segments: np.ndarray,
    window: int,
    rng: np.random.Generator,
    min_overlap: float = 0.5,
    max_tries: int = 200,
) -> int:
    """Draw a window start that keeps at least one action.

    Args:
        num_frames: frames (or feature steps) in the video.
        segments: (N, 2) action [start, end] in the same units; may be empty.
        window: window length.
        rng: the random generator (owned by the caller, for reproducibility).
        min_overlap: share of an action's length that must lie inside the window.
        max_tries: random draws before falling back to centring on a random action.

    Returns:
        The start, in [0, max(0, num_frames - window)]. 0 when the video fits.
    """
    if window <= 0:
        raise PbdError(f"window must be positive, got {window}")
    if num_frames <= window:
        return 0
    segs = _as_segments(segments)  # (N, 2)
    last = num_frames - window
    if not len(segs):
        return int(rng.integers(0, last + 1))
    for _ in range(max_tries):
        start = int(rng.integers(0, last + 1))
        if _kept(segs, start, window, min_overlap).any():
            return start
    # Rare: short actions in a long video, or actions longer than window / min_overlap
    # (then no window qualifies and the centred one keeps the most of it).
    seg = segs[rng.integers(0, len(segs))]
    centre = (seg[0] + seg[1]) / 2.0
    return int(np.clip(round(centre - window / 2.0), 0, last))


def crop_segments(
    segments: np.ndarray,
    labels: np.ndarray,
    start: int,
    window: int,
    min_overlap: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Actions of a window, relative to its start.

    Args:
        segments: (N, 2) action [start, end] in video frames.
        labels: (N,) class indices.
        start: the window's first frame.
        window: window length.
        min_overlap: share of an action's length that must lie inside to keep it.

    Returns:
        ((K, 2) float32 segments clipped to [0, window], (K,) labels), K <= N.
    """
    segs = _as_segments(segments)  # (N, 2)
    labels = np.asarray(labels)
    if len(labels) != len(segs):
        raise PbdError(f"{len(segs)} segments but {len(labels)} labels; they must match")
    keep = _kept(segs, start, window, min_overlap)  # (N,) bool
    shifted = np.clip(segs[keep] - start, 0.0, float(window))  # (K, 2)
    return shifted.astype(np.float32), labels[keep]


def _kept(segs: np.ndarray, start: int, window: int, min_overlap: float) -> np.ndarray:
    inter = np.minimum(segs[:, 1], start + window) - np.maximum(segs[:, 0], start)  # (N,)
    length = segs[:, 1] - segs[:, 0]  # (N,)
    return (inter > 0) & (inter >= min_overlap * length)


def _as_segments(segments: np.ndarray) -> np.ndarray:
    segs = np.asarray(segments, dtype=np.float64)
    if segs.size == 0:
        return np.zeros((0, 2), np.float64)
    if segs.ndim != 2 or segs.shape[1] != 2:
        raise PbdError(f"segments must have shape (N, 2), got {segs.shape}")
    return segs  # (N, 2)
