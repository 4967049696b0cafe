"""Training augmentations of the published recipe (AdaTAD / OpenTAD on THUMOS14).

Every random choice of a window is drawn in the main process (so a seed fixes the run
whatever the number of loader workers) and applied by the worker that decodes it:
RandomResizedCrop (area 8-100 %, aspect 3/4-4/3, resized to the crop), a horizontal flip
(p = 0.5) and colour jitter (brightness, contrast, saturation, each by up to +-40 %), the
same for every frame of the window so motion is untouched. Random truncation with a crop
ratio (ActionFormer's `truncate_feats`) is drawn in `TadDataset.draw_window`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pbd_deploy.core.video import normalize

AREA = (0.08, 1.0)
ASPECT = (3 / 4, 4 / 3)
JITTER = 0.4
CROP_RATIO = (0.9, 1.0)  # a video shorter than the window keeps 90-100 % of its length


@dataclass(frozen=True)
class Augment:
    """The random draws of one training window."""

    box: tuple[int, int, int, int]  # top, left, height, width in the resized frames
    flip: bool
    jitter: tuple[float, float, float]  # brightness, contrast, saturation factors


def draw_augment(rng: np.random.Generator, height: int, width: int) -> Augment:
    """torchvision's RandomResizedCrop box (10 tries, then the centred largest box), a
    flip and jitter factors."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*AREA)
        aspect = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            box = (int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w)
            break
    else:
        side = min(height, width)
        box = ((height - side) // 2, (width - side) // 2, side, side)
    flip = bool(rng.random() < 0.5)
    jitter = tuple(float(f) for f in rng.uniform(1 - JITTER, 1 + JITTER, size=3))
    return Augment(box, flip, jitter)


def apply_augment(frames: np.ndarray, aug: Augment, crop: int, mean, std) -> np.ndarray:
    """(T, H, W, 3) uint8 -> the model input (3, T, crop, crop) float32, augmented."""
    top, left, h, w = aug.box
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + h, left : left + w]))
    x = x.permute(0, 3, 1, 2).float()  # (T, 3, h, w)
    x = F.interpolate(x, size=(crop, crop), mode="bilinear", align_corners=False)
    if aug.flip:
        x = x.flip(-1)
    brightness, contrast, saturation = aug.jitter  # torchvision's order and formulas
    luma = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    x = (x * brightness).clamp(0, 255)
    mean_grey = (x * luma).sum(1).mean()
    x = ((x - mean_grey) * contrast + mean_grey).clamp(0, 255)
    grey = (x * luma).sum(1, keepdim=True)
    x = ((x - grey) * saturation + grey).clamp(0, 255)
    frames = x.permute(0, 2, 3, 1).numpy()  # (T, crop, crop, 3) in 0..255
    return normalize(frames, mean, std)
