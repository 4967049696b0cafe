"""The post-processing a model declares, "pbd" or "opentad", behind one interface.

A model's config.json (`DetectorConfig.postprocess`) and an export's model.json
("postprocess") hold the method and its settings as a dict; `postprocess_from_dict` reads
it (a dict without "method" is ours, so older files load as before). Every consumer (the
runtime Detector, eval's torch path, export's parity check, compress's block scoring) goes
through the two steps here, and none of them branches on the method:

* `window_candidates`: one window's candidates, in seconds;
* `video_detections`: one video's detections from its windows' candidates, best first.

Methods:
* "pbd" (`core.postprocess.PostprocessConfig`, `core.nms`): per window the best
  `pre_nms_topk` (point, class) pairs, zero-length segments dropped, point x of a window
  centred at x + 0.5 steps; per video per-class Soft-NMS, the best `max_detections`.
* "opentad" (`core.opentad_post.OpenTADPostConfig`): OpenTAD's steps, order, float32
  arithmetic, rounding and time mapping (point x at x steps), and optionally the fusion of
  a video classifier's scores (ActivityNet's external classifier).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pbd_deploy.core import config as config_io
from pbd_deploy.core import opentad_post
from pbd_deploy.core import windows as pbd_windows
from pbd_deploy.core.nms import fast_postprocess
from pbd_deploy.core.opentad_post import OpenTADPostConfig
from pbd_deploy.core.postprocess import Detections, PostprocessConfig
from pbd_deploy.errors import PbdError

Postprocess = PostprocessConfig | OpenTADPostConfig
METHODS: dict[str, type] = {"pbd": PostprocessConfig, "opentad": OpenTADPostConfig}


def postprocess_from_dict(data: Mapping | None, where: str = "") -> Postprocess:
    """The post-processing of a config.json / model.json "postprocess" dict.

    None or a dict without "method" is "pbd" (what every file held before the field
    existed); unknown methods or settings are refused in one line naming `where`.
    """
    if data is None:
        return PostprocessConfig()
    if not isinstance(data, Mapping):
        raise PbdError(f"postprocess in {where or 'the model'} must be a mapping, not {data!r}")
    settings = dict(data)
    method = settings.pop("method", "pbd")
    if method not in METHODS:
        raise PbdError(
            f"postprocess method {method!r} in {where or 'the model'} unknown; "
            f"use one of {', '.join(METHODS)}"
        )
    return config_io.from_dict(METHODS[method], settings, where)


def method_name(post: Postprocess) -> str:
    return next(name for name, cls in METHODS.items() if isinstance(post, cls))


def postprocess_to_dict(post: Postprocess) -> dict:
    """JSON-ready {"method": ..., settings...}; `postprocess_from_dict` reads it back."""
    return {"method": method_name(post), **post.to_dict()}


def gpu_decode(post: Postprocess) -> bool:
    """Whether the TensorRT backend's CUDA decode kernel (`runtime/kernels.py`) computes
    this method's window candidates; it implements "pbd" only, the rest runs on the host."""
    return isinstance(post, PostprocessConfig)


def window_candidates(
    post: Postprocess,
    scores: np.ndarray,
    segments: np.ndarray,
    positions: np.ndarray,
    valid_points: float,
    to_seconds,
    duration: float,
    video_scores: np.ndarray | None = None,
) -> Detections:
    """One window's candidates: segments (M, 2) in seconds, scores (M,), labels (M,).

    Args:
        scores: (N, K) probabilities; segments: (N, 2) in head points; positions: (N,).
        valid_points: points of the window that hold real (not padded) input.
        to_seconds: head-point coordinates -> seconds for this window, point x centred at
            x + 0.5 (`core.windows.points_to_seconds`).
        duration: the video's length in seconds; segments are clipped to it.
        video_scores: (C,) a video classifier's class scores to fuse ("opentad" only);
            labels then index its classes.
    """
    if isinstance(post, OpenTADPostConfig):
        return _opentad_window(post, scores, segments, positions, valid_points, to_seconds,
                               duration, video_scores)  # fmt: skip
    if video_scores is not None:
        raise PbdError(
            "video scores are fused by OpenTAD's post-processing; this model's is 'pbd' "
            "(convert the OpenTAD model with its config, or drop --video-scores)"
        )
    return pbd_windows.window_candidates(
        scores, segments, positions, valid_points, to_seconds, duration, post
    )


def video_detections(post: Postprocess, parts: list) -> Detections:
    """One video's detections from its windows' `window_candidates`, best first."""
    segs, scores, labels = (np.concatenate(a) for a in zip(*parts))
    if isinstance(post, PostprocessConfig):
        return fast_postprocess(segs, scores, labels, post)  # = postprocess, stops at the top-k
    if post.sliding_window:  # OpenTAD's gather_ddp_results: Soft-NMS across the windows
        segs, scores, labels = opentad_post.round_detections(
            *opentad_post.batched_nms(segs, scores, labels, post)
        )
    order = np.argsort(-scores, kind="stable")
    return segs[order], scores[order], labels[order].astype(np.int64)


def _opentad_window(post, scores, segments, positions, valid_points, to_seconds, duration,
                    video_scores) -> Detections:  # fmt: skip
    keep = positions < valid_points  # OpenTAD masks the padded points
    segs, scs, labels = opentad_post.select_candidates(scores[keep], segments[keep], post)
    if not post.sliding_window:  # one window per video: NMS here, in head steps
        segs, scs, labels = opentad_post.batched_nms(segs, scs, labels, post)
    # Sliding windows: OpenTAD's point x is at x steps, our mapping centres it at x + 0.5, so
    # move back half a step. A resized video maps as OpenTAD does already (points / length).
    shift = np.float32(0.5 if post.sliding_window else 0.0)
    secs = np.asarray(to_seconds(segs - shift), dtype=np.float32)
    secs = opentad_post.clip_seconds(secs.reshape(-1, 2), duration)
    if video_scores is not None:
        secs, scs, labels = opentad_post.fuse_video_classifier(
            secs, scs, video_scores, post.video_topk
        )
    return opentad_post.round_detections(secs, scs, labels)
