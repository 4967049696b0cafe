"""Named model configurations: the real VideoMAE sizes and a tiny one for the CPU."""

from __future__ import annotations

import copy

from pbd_deploy.core.atomic import prepare_output
from pbd_deploy.errors import PbdError
from pbd_deploy.models.actionformer import HeadConfig
from pbd_deploy.models.detector import Detector, DetectorConfig, InputConfig
from pbd_deploy.models.io import CONFIG_FILE, add_history, save_model
from pbd_deploy.models.vit import BackboneConfig

# AdaTAD's THUMOS14 test setting: 768-frame windows overlapping by half, short side resized
# to 160 and centre-cropped to 160x160, features resized to 768 points.
_REAL_INPUT = dict(window=768, stride=384, resize=160, crop=160)
_REAL_HEAD = dict(dim=512, length=768, levels=6, heads=4, attn_window=19)

_SIZES = {
    "videomae-s": (384, 12, 6),
    "videomae-b": (768, 12, 12),
    "videomae-l": (1024, 24, 16),
    "videomae-h": (1280, 32, 16),
}


def _real(dim: int, depth: int, heads: int) -> dict:
    return dict(
        input=InputConfig(**_REAL_INPUT),
        # VideoMAE is pre-trained at 224: its 14x14 sin-cos table is resized (bicubic) to the
        # 10x10 grid of 160-pixel crops, as OpenTAD does, so converted weights see their codes.
        backbone=BackboneConfig(dim=dim, depth=depth, heads=heads, img_size=224),
        head=HeadConfig(in_dim=dim, **_REAL_HEAD),
    )


def _tiny() -> dict:
    # 12 blocks like VideoMAE-S, so dropping 3 is the same 25% of depth; 32x32 frames make
    # 2x2 patches, and 128-frame windows at 10 fps cover 12.8 s: trains in minutes on a CPU.
    return dict(
        input=InputConfig(window=128, fps=10.0, resize=36, crop=32),
        backbone=BackboneConfig(dim=64, depth=12, heads=4, img_size=32, drop_path=0.1),
        head=HeadConfig(
            in_dim=64,
            dim=64,
            length=64,
            levels=5,
            heads=4,
            attn_window=9,
            regression_ranges=[[0, 4], [4, 8], [8, 16], [16, 32], [32, 10000]],
        ),
    )


def _features() -> dict:
    # ActionFormer on pre-extracted features (e.g. I3D 2048-d at 4-frame stride).
    return dict(
        input=InputConfig(mode="features", window=2304, feature_dim=2048, feature_stride=4.0),
        backbone=None,
        head=HeadConfig(in_dim=2048, dim=512, length=2304, levels=6, attn_window=19),
    )


MODELS = {name: (lambda s=s: _real(*s)) for name, s in _SIZES.items()}
MODELS["videomae-tiny"] = _tiny
MODELS["features"] = _features


def model_config(name: str, class_names: list[str], **overrides) -> DetectorConfig:
    """The named architecture for `class_names`; `overrides` replace input fields (e.g. fps)."""
    if name not in MODELS:
        raise PbdError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    parts = copy.deepcopy(MODELS[name]())
    for key, value in overrides.items():
        if value is not None:
            setattr(parts["input"], key, value)
    if overrides.get("window") and not overrides.get("stride"):
        parts["input"].stride = None
        parts["input"].__post_init__()  # the default stride follows the new window
    return DetectorConfig(name=name, class_names=list(class_names), **parts)


def init_model_dir(name: str, out_dir, class_names: list[str], force: bool = False):
    """`pbd-deploy init`: write a freshly initialised model directory."""
    prepare_output(out_dir, force, marker=CONFIG_FILE)
    model = Detector(model_config(name, class_names))
    add_history(model, "init", architecture=name)
    return save_model(model, out_dir, force)
