"""The detector: optional VideoMAE backbone + ActionFormer head, and its configuration.

`DetectorConfig` is what `config.json` in a model directory holds: the input spec, the
architecture (including the kept block indices and widths after compression), the class
names and the history of every stage that produced the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pbd_deploy.core import config as config_io
from pbd_deploy.core.metrics import THUMOS_THRESHOLDS, check_thresholds
from pbd_deploy.core.postprocess import PostprocessConfig
from pbd_deploy.core.postprocessors import Postprocess, postprocess_from_dict, postprocess_to_dict
from pbd_deploy.core.video import VIDEOMAE_MEAN, VIDEOMAE_STD
from pbd_deploy.errors import PbdError
from pbd_deploy.models.actionformer import ActionFormerHead, HeadConfig, decode_segments, point_grid
from pbd_deploy.models.opentad import OpenTADHead
from pbd_deploy.models.vit import BackboneConfig, VideoMAEBackbone, init_weights


@dataclass
class InputConfig:
    """What one model window is made of.

    In video mode a window is `window` frames sampled at `fps`, resized (short side) to
    `resize` and centre-cropped to `crop`. In feature mode it is `window` rows of a
    pre-extracted (T, feature_dim) array, each row covering `feature_stride` frames.

    `sampling` says how a video becomes windows: "rate" resamples it to `fps` and slides
    windows over it (`stride` apart); "resize" picks `window` frames spread over the whole
    video with OpenTAD's `LoadFrames(method="resize")` indices (`core.video.resize_indices`),
    one window per video whatever its length, as OpenTAD's ActivityNet configs do. Head
    point p of a resized video is at p / head length * duration seconds (OpenTAD's
    `convert_to_seconds`). "stride" takes every `frame_stride`-th frame of the file (0, k,
    2k, ...) whatever its rate and places windows as OpenTAD's `SlidingWindowDataset` does,
    the last one aligned to the video's end, as OpenTAD's THUMOS14 configs do
    (`core.windows.window_plan`).
    """

    mode: str = "video"
    sampling: str = "rate"
    window: int = 768
    stride: int | None = None  # sliding-window stride at inference; default 3/4 of the window
    fps: float | None = None  # resample videos to this rate; None keeps each file's rate
    frame_stride: int = 1  # sampling "stride": every frame_stride-th frame of the file
    resize: int = 160
    crop: int = 160
    mean: tuple[float, float, float] = VIDEOMAE_MEAN
    std: tuple[float, float, float] = VIDEOMAE_STD
    feature_dim: int | None = None
    feature_stride: float = 1.0

    def __post_init__(self):
        if self.mode not in ("video", "features"):
            raise PbdError(f"input mode must be 'video' or 'features', not {self.mode!r}")
        if self.mode == "features" and not self.feature_dim:
            raise PbdError("feature mode needs input.feature_dim")
        if self.sampling not in ("rate", "resize", "stride"):
            raise PbdError(
                f"input sampling must be 'rate', 'resize' or 'stride', not {self.sampling!r}"
            )
        if self.sampling == "stride" and (self.mode == "features" or self.fps is not None):
            raise PbdError(
                "input sampling 'stride' takes every frame_stride-th frame of a video file, so "
                "it needs video mode and no input.fps (resampling); use sampling 'rate' for that"
            )
        if int(self.frame_stride) != self.frame_stride or self.frame_stride < 1:
            raise PbdError(
                f"input.frame_stride must be a positive integer, not {self.frame_stride!r}"
            )
        if self.frame_stride != 1 and self.sampling != "stride":
            raise PbdError(
                f"input.frame_stride ({self.frame_stride}) applies to sampling 'stride' only, "
                f"not {self.sampling!r}"
            )
        self.frame_stride = int(self.frame_stride)
        if self.sampling == "resize" and self.mode == "features":
            raise PbdError(
                "input sampling 'resize' works on videos only: resizing feature files "
                "(OpenTAD's ResizeFeat) is not supported; use sampling 'rate'"
            )
        if self.sampling == "resize" and self.fps is not None:
            raise PbdError(
                f"input sampling 'resize' picks {self.window} frames from every frame of "
                f"the file, so input.fps ({self.fps}) must be unset; convert the videos' "
                "rate beforehand (OpenTAD's ActivityNet videos are 15 fps)"
            )
        if self.stride is None:  # one window per video when resizing
            self.stride = self.window if self.sampling == "resize" else max(1, self.window * 3 // 4)
        self.mean, self.std = tuple(self.mean), tuple(self.std)

    @property
    def window_frames(self) -> float:
        """Frames covered by one window."""
        return self.window * (self.feature_stride if self.mode == "features" else 1)


@dataclass
class DetectorConfig:
    """Everything needed to rebuild a detector without the script that made it."""

    name: str
    class_names: list[str]
    input: InputConfig = field(default_factory=InputConfig)
    backbone: BackboneConfig | None = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    history: list[dict] = field(default_factory=list)
    # How raw outputs become detections ("method": "pbd" | "opentad", core.postprocessors)
    # and the tIoU thresholds the model is evaluated and compressed with. Files written
    # before these fields existed load with ours and THUMOS14's.
    postprocess: dict = field(default_factory=lambda: postprocess_to_dict(PostprocessConfig()))
    thresholds: tuple[float, ...] = THUMOS_THRESHOLDS
    # A class-agnostic detector (OpenTAD's `class_agnostic=True` datasets, AdaTAD on
    # ActivityNet) has one class standing for every annotated label: its training targets
    # label every segment 0 and, without a video classifier, it is scored class-agnostically
    # (every ground-truth segment relabelled to its class). Files without it: False.
    class_agnostic: bool = False

    def __post_init__(self):
        if not self.class_names:
            raise PbdError("a detector needs at least one class name")
        if not isinstance(self.class_agnostic, bool):
            raise PbdError(
                f"model config class_agnostic must be true or false, not {self.class_agnostic!r}"
            )
        if self.class_agnostic and len(self.class_names) != 1:
            raise PbdError(
                f"a class-agnostic detector has exactly one class; this one names "
                f"{len(self.class_names)} ({', '.join(self.class_names[:3])}...): set "
                "class_agnostic false or give it one class"
            )
        if (self.backbone is None) != (self.input.mode == "features"):
            raise PbdError("feature-mode models have no backbone; video-mode models need one")
        post = postprocess_from_dict(self.postprocess, "model config (postprocess)")
        self.postprocess = postprocess_to_dict(post)
        self.thresholds = check_thresholds(self.thresholds, "model config (thresholds)")
        sliding = getattr(post, "sliding_window", None)
        if sliding is not None and sliding != (self.input.sampling != "resize"):
            raise PbdError(
                f"OpenTAD post-processing with sliding_window={sliding} does not fit input "
                f"sampling {self.input.sampling!r} (sliding windows go with 'rate' or 'stride')"
            )

    @property
    def post(self) -> Postprocess:
        """The post-processing settings as an object (`core.postprocessors`)."""
        return postprocess_from_dict(self.postprocess)

    @property
    def truth_label(self) -> str | None:
        """The label every ground-truth segment takes when this model is scored: its one
        class if it is class-agnostic, else None (labels stay)."""
        return self.class_names[0] if self.class_agnostic else None

    @property
    def frames_per_step(self) -> float:
        """Frames covered by one point of the head's finest level."""
        return self.input.window_frames / self.head.length

    def to_dict(self) -> dict:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "model config") -> "DetectorConfig":
        """Rebuild from `to_dict()` output; unknown or wrong fields raise PbdError.

        A config without "backbone" is a feature-mode one (no backbone), as before.
        """
        if isinstance(data, dict):
            data = {"backbone": None, **data}
        return config_io.from_dict(cls, data, where)


def window_valid(model: nn.Module, point_valid: torch.Tensor) -> torch.Tensor | None:
    """(B,) valid head points per window from a training batch's (B, N) point mask (level 0
    comes first) for a masked head (`Detector.detect`), else None; `model` may be wrapped
    (DDP's `.module`)."""
    head = getattr(getattr(getattr(model, "module", model), "config", None), "head", None)
    if not getattr(head, "masked", False):
        return None  # any other head: every point treated as real input, as before
    return point_valid[:, : head.length].sum(1)


class Detector(nn.Module):
    """Temporal action detector: frames (B, 3, T, H, W) or features (B, C, T) -> point outputs."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        self.backbone = VideoMAEBackbone(config.backbone) if config.backbone else None
        head = OpenTADHead if config.head.kind == "opentad" else ActionFormerHead
        self.head = head(config.head, len(config.class_names))
        positions, _, _ = point_grid(config.head)
        self.register_buffer("positions", positions, persistent=False)  # (N,)
        if self.backbone is not None:
            init_weights(self.backbone)

    @property
    def num_classes(self) -> int:
        return len(self.config.class_names)

    def features(self, x: torch.Tensor, return_blocks: bool = False):
        """Head input (B, C, length) from frames or features, plus block outputs if asked."""
        blocks = []
        if self.backbone is not None:
            x = self.backbone(x, return_blocks=return_blocks)
            if return_blocks:
                x, blocks = x
        x = self.fit_length(x)
        return (x, blocks) if return_blocks else x

    def fit_length(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, C, T') resampled to the head's length (B, C, length)."""
        length = self.config.head.length
        if x.shape[-1] != length:
            x = F.interpolate(x, size=length, mode="linear", align_corners=False)
        return x

    @property
    def masked(self) -> bool:
        """Whether the head takes OpenTAD's padding mask (`HeadConfig.masked`)."""
        return self.config.head.masked

    def detect(
        self, feats: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Head input (B, C, length) -> logits (B, N, K), offsets (B, N, 2) over all levels.

        `valid`: (B,) head points of real (not padded) input per window; a masked head
        (`masked`) masks the rest as OpenTAD does, any other head ignores it.
        """
        if self.masked and valid is not None:
            logits, offsets = self.head(feats, torch.as_tensor(valid, device=feats.device))
        else:
            logits, offsets = self.head(feats)
        return torch.cat(logits, 1), torch.cat(offsets, 1)

    def forward(self, x: torch.Tensor, return_blocks: bool = False, valid=None):
        """Raw outputs over all levels: logits (B, N, K), offsets (B, N, 2) in level-0 steps.

        With `return_blocks`, also the list of every kept backbone block's output tokens.
        `valid`: (B,) valid head points per window (see `detect`), None for full windows.
        """
        feats = self.features(x, return_blocks)
        if return_blocks:
            feats, blocks = feats
        out = self.detect(feats, valid)
        return (*out, blocks) if return_blocks else out

    def predict(self, x: torch.Tensor, valid=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities (B, N, K) and segments (B, N, 2) in level-0 steps of the window.

        `valid`: (B,) valid head points per window (see `detect`), None for full windows.
        """
        logits, offsets = self(x, valid=valid)
        return torch.sigmoid(logits), decode_segments(self.positions, offsets)

    def example_input(self, batch: int = 1, device=None) -> torch.Tensor:
        """A zero input of the configured window shape."""
        inp = self.config.input
        if self.backbone is None:
            return torch.zeros(batch, inp.feature_dim, inp.window, device=device)
        return torch.zeros(batch, 3, inp.window, inp.crop, inp.crop, device=device)
