"""ActionFormer-style anchor-free temporal detection head and its losses.

Structure (Zhang et al., ECCV 2022): a conv embedding, transformer layers with local window
attention, a pyramid built by stride-2 downsampling, and classification / regression heads
shared across pyramid levels (with a learned per-level scale for regression). Every point of
every level predicts class probabilities and its distances to the action start and end.
Training assigns each point to the shortest ground-truth action that contains it (within a
centre-sampling radius) and whose extent fits the level's regression range; losses are
sigmoid focal (classification) and DIoU (regression).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pbd_deploy.errors import PbdError


@dataclass
class HeadConfig:
    """Architecture of the detection head; lengths are in head input steps."""

    in_dim: int = 384
    dim: int = 256
    length: int = 768  # points at level 0 (the backbone features are resized to this)
    embed_layers: int = 2
    stem_layers: int = 2
    levels: int = 6  # pyramid levels; level l has stride 2**l
    heads: int = 4
    attn_window: int = 19
    head_layers: int = 2
    regression_ranges: list[list[float]] = field(
        default_factory=lambda: [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]]
    )
    center_radius: float = 1.5
    prior_prob: float = 0.01
    input_norm: bool = True  # BatchNorm on the head input; see ActionFormerHead
    # "actionformer": our head (this file); "opentad": OpenTAD's modules (models/opentad.py),
    # what converted OpenTAD / AdaTAD checkpoints use. attn_window -1 = global attention.
    kind: str = "actionformer"
    feat_dim: int | None = None  # opentad: width of the cls/reg towers (None: dim)
    affine_drop_path: bool = True  # opentad: AffineDropPath scales (OpenTAD path_pdrop > 0)
    drop_path: float = 0.1  # opentad: stochastic depth rate while training
    abs_pe: bool = False  # opentad: sin-cos position table added after the embedding convs
    # opentad: OpenTAD's padding mask (models/opentad.py); convert sets it, files without it
    # read as false (every point of a window treated as real input, as before)
    masked: bool = False

    def __post_init__(self):
        if self.kind not in ("actionformer", "opentad"):
            raise PbdError(f"head kind must be 'actionformer' or 'opentad', not {self.kind!r}")
        if self.kind == "opentad" and self.input_norm:
            raise PbdError("the opentad head has no input BatchNorm; set input_norm to false")
        if self.masked and self.kind != "opentad":
            raise PbdError("head.masked (OpenTAD's padding mask) needs head kind 'opentad'")


def channel_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over channels of a (B, C, T) tensor."""
    return norm(x.transpose(1, 2)).transpose(1, 2)


def band_mask(length: int, window: int, device) -> torch.Tensor:
    """(T, T) boolean mask letting each step attend to steps within window // 2 of it."""
    idx = torch.arange(length, device=device)
    return (idx[None, :] - idx[:, None]).abs() <= window // 2


class LocalTransformerLayer(nn.Module):
    """Pre-norm transformer layer whose attention is restricted to a local window."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape  # (B, C, T)
        h = x.transpose(1, 2)  # (B, T, C)
        qkv = self.qkv(self.norm1(h)).reshape(b, t, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=band_mask(t, self.window, x.device)
        )
        h = h + self.proj(attn.transpose(1, 2).reshape(b, t, c))
        h = h + self.mlp(self.norm2(h))
        return h.transpose(1, 2)


class ConvBlock(nn.Module):
    """conv(k=3) -> channel LayerNorm -> ReLU."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, 3, padding=1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(channel_norm(self.conv(x), self.norm))


class PredictionHead(nn.Module):
    """Conv tower shared across levels, ending in `out_dim` channels per point."""

    def __init__(self, dim: int, out_dim: int, layers: int):
        super().__init__()
        self.tower = nn.Sequential(*(ConvBlock(dim, dim) for _ in range(layers)))
        self.out = nn.Conv1d(dim, out_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.tower(x))


class ActionFormerHead(nn.Module):
    """Feature pyramid + shared heads: (B, in_dim, length) -> per-level logits and offsets."""

    def __init__(self, config: HeadConfig, num_classes: int):
        super().__init__()
        c = config
        if len(c.regression_ranges) < c.levels:
            raise PbdError(
                f"head has {c.levels} levels but {len(c.regression_ranges)} regression ranges"
            )
        self.config, self.num_classes = c, num_classes
        # Backbone features (a from-scratch or freshly pruned ViT especially) carry a large
        # constant per-channel offset and a small content signal; the channel LayerNorms
        # below cannot undo that and training stalls at the prior. BatchNorm over
        # (batch, time) standardises each channel; at inference it is a per-channel affine
        # map, which an exporter can fold into the first conv.
        self.input_norm = nn.BatchNorm1d(c.in_dim) if c.input_norm else nn.Identity()
        self.embed = nn.Sequential(
            ConvBlock(c.in_dim, c.dim),
            *(ConvBlock(c.dim, c.dim) for _ in range(c.embed_layers - 1)),
        )
        self.stem = nn.ModuleList(
            LocalTransformerLayer(c.dim, c.heads, c.attn_window) for _ in range(c.stem_layers)
        )
        self.branch = nn.ModuleList(
            LocalTransformerLayer(c.dim, c.heads, c.attn_window) for _ in range(c.levels - 1)
        )
        self.level_norms = nn.ModuleList(nn.LayerNorm(c.dim) for _ in range(c.levels))
        self.cls_head = PredictionHead(c.dim, num_classes, c.head_layers)
        self.reg_head = PredictionHead(c.dim, 2, c.head_layers)
        self.scales = nn.Parameter(torch.ones(c.levels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Start every point at the prior probability so focal loss is stable (RetinaNet).
        nn.init.constant_(
            self.cls_head.out.bias, -math.log((1 - self.config.prior_prob) / self.config.prior_prob)
        )

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every level: list of (B, dim, length / 2**l)."""
        x = self.embed(self.input_norm(x))
        for layer in self.stem:
            x = layer(x)
        levels = [x]
        for layer in self.branch:
            x = layer(F.max_pool1d(x, 3, stride=2, padding=1))
            levels.append(x)
        return [channel_norm(f, n) for f, n in zip(levels, self.level_norms)]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: class logits (B, T_l, K), start/end offsets in level-0 steps (B, T_l, 2)."""
        logits, offsets = [], []
        for level, f in enumerate(self.pyramid(x)):
            logits.append(self.cls_head(f).transpose(1, 2))
            # ActionFormer uses ReLU here; on from-scratch or freshly pruned features a whole
            # level's ReLU can die and its regression never recovers (seen in our runs), so
            # we use softplus: also non-negative, but its gradient never vanishes.
            reg = F.softplus(self.scales[level] * self.reg_head(f)).transpose(1, 2)
            offsets.append(reg * 2**level)
        return logits, offsets


def point_grid(config: HeadConfig, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every point of every level: position, stride and regression range (all in level-0 steps).

    Returns (positions (N,), strides (N,), ranges (N, 2)) in the order the head emits points.
    """
    positions, strides, ranges = [], [], []
    for level in range(config.levels):
        stride = 2**level
        n = math.ceil(config.length / stride)
        positions.append(torch.arange(n, dtype=torch.float32) * stride)
        strides.append(torch.full((n,), float(stride)))
        ranges.append(
            torch.tensor(config.regression_ranges[level], dtype=torch.float32).expand(n, 2)
        )
    cat = lambda xs: torch.cat(xs).to(device)  # noqa: E731
    return cat(positions), cat(strides), cat(ranges)


def decode_segments(positions: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Offsets (..., N, 2) at positions (N,) -> segments (..., N, 2) [start, end] in steps."""
    return torch.stack([positions - offsets[..., 0], positions + offsets[..., 1]], dim=-1)


def assign_targets(
    segments: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: HeadConfig,
    grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """ActionFormer label assignment for one window.

    Args:
        segments: (M, 2) ground truth in level-0 steps; labels: (M,) class ids.
    Returns:
        class targets (N, K) in {0, 1} and offset targets (N, 2) in level-0 steps.
    """
    positions, strides, ranges = grid
    n = positions.shape[0]
    if segments.shape[0] == 0:
        return positions.new_zeros(n, num_classes), positions.new_zeros(n, 2)
    p = positions[:, None]  # (N, 1)
    left, right = p - segments[:, 0], segments[:, 1] - p  # (N, M)
    center = segments.mean(1)
    radius = strides[:, None] * config.center_radius
    near_center = (
        torch.minimum(
            p - torch.maximum(center - radius, segments[:, 0]),
            torch.minimum(center + radius, segments[:, 1]) - p,
        )
        > 0
    )
    reach = torch.maximum(left, right)
    in_range = (reach >= ranges[:, :1]) & (reach <= ranges[:, 1:])
    lengths = (segments[:, 1] - segments[:, 0]).expand(n, -1).clone()
    lengths[~(near_center & in_range)] = float("inf")
    shortest, best = lengths.min(1)  # (N,)
    # Points inside several equally short actions get all their labels (multi-hot).
    hit = (lengths <= shortest[:, None] + 1e-3) & torch.isfinite(shortest)[:, None]
    cls = (hit.float() @ F.one_hot(labels, num_classes).float()).clamp(max=1)
    idx = torch.arange(n)
    reg = torch.stack([left[idx, best], right[idx, best]], dim=1)
    return cls, reg


def diou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-D distance-IoU loss between (P, 2) start/end offsets from the same points."""
    inter = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    union = pred.sum(1) + target.sum(1) - inter
    iou = inter / union.clamp(min=1e-8)
    enclose = torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 1], target[:, 1])
    centre_gap = 0.5 * ((pred[:, 1] - pred[:, 0]) - (target[:, 1] - target[:, 0]))
    return 1 - iou + (centre_gap / enclose.clamp(min=1e-8)) ** 2


def detection_loss(
    logits: torch.Tensor,
    offsets: torch.Tensor,
    cls_targets: torch.Tensor,
    reg_targets: torch.Tensor,
    valid: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Sigmoid focal + DIoU, both normalised by the number of positive points.

    Args:
        logits: (B, N, K); offsets: (B, N, 2) predictions over all levels.
        cls_targets: (B, N, K); reg_targets: (B, N, 2); valid: (B, N) points inside the video.
    """
    positive = (cls_targets.sum(-1) > 0) & valid
    normalizer = positive.sum().clamp(min=1).float()
    focal = sigmoid_focal(logits[valid], cls_targets[valid], alpha, gamma).sum() / normalizer
    if positive.any():
        reg = diou_loss(offsets[positive], reg_targets[positive]).sum() / normalizer
    else:
        reg = offsets.sum() * 0
    return {"cls": focal, "reg": reg, "loss": focal + reg}


def sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float):
    """Elementwise sigmoid focal loss (Lin et al. 2017)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return weight * ce * (1 - p_t) ** gamma
