"""Width-reduced models at a MACs target: the comparison point for dropping depth.

Until channel pruning exists as its own stage, the width variant is built by narrowing the
config (fewer attention heads of the same size, a smaller MLP hidden size in every block)
and initialising it afresh: latency does not depend on the weights' values.
"""

from __future__ import annotations

import copy
import math

from pbd_deploy.errors import PbdError
from pbd_deploy.models.complexity import count_macs
from pbd_deploy.models.detector import Detector, DetectorConfig
from pbd_deploy.models.io import add_history


def backbone_macs(config: DetectorConfig) -> int:
    """MACs of the backbone for one window of the config's input (`count_macs`'s share)."""
    return count_macs(config)["backbone"]


def narrow_config(config: DetectorConfig, macs_target: int, align: int = 8) -> DetectorConfig:
    """A copy of `config` whose backbone MACs are as close to `macs_target` as `align` allows.

    Heads are cut first, in proportion to the MACs that must go (same head size, so the
    attention GEMMs keep their inner size), then the MLP hidden size of every block is
    solved for exactly, MACs being affine in it, and rounded to a multiple of `align`.

    Args:
        config: a video-mode config (its blocks all of one MLP width).
        macs_target: backbone MACs per window to reach, e.g. a depth-dropped model's.
        align: the MLP hidden size is a multiple of this (8 keeps GEMMs vector-friendly).
    """
    if config.backbone is None:
        raise PbdError("only video models (with a backbone) can be narrowed")
    bb = config.backbone
    head_dim = bb.attn_dim // bb.heads
    fixed = backbone_macs(_with(config, block_indices=[], mlp_dims=None))  # patch embed, norm
    full = backbone_macs(config)
    if not fixed < macs_target <= full:
        raise PbdError(
            f"MACs target {macs_target / 1e9:.2f} G is outside what narrowing reaches "
            f"({fixed / 1e9:.2f} G, {full / 1e9:.2f} G]"
        )
    keep = (macs_target - fixed) / (full - fixed)
    heads = max(1, min(bb.heads, math.floor(bb.heads * keep + 0.5)))
    blocks = len(bb.block_indices)

    def at(hidden: int) -> DetectorConfig:
        return _with(config, heads=heads, head_dim=head_dim, mlp_dims=[hidden] * blocks)

    h1, h2 = bb.mlp_dim(0), max(1, bb.mlp_dim(0) // 2)
    m1, m2 = backbone_macs(at(h1)), backbone_macs(at(h2))
    slope = (m1 - m2) / (h1 - h2)  # MACs per unit of MLP hidden size, over all blocks
    hidden = (macs_target - m1) / slope + h1
    hidden = max(align, int(round(hidden / align)) * align)
    return at(hidden)


def init_narrow(config: DetectorConfig, macs_target: int, align: int = 8) -> Detector:
    """A freshly initialised width-reduced detector at `macs_target` backbone MACs."""
    narrow = narrow_config(config, macs_target, align)
    model = Detector(narrow).eval()
    add_history(
        model,
        "narrow",
        macs_target=int(macs_target),
        macs=backbone_macs(narrow),
        heads=narrow.backbone.heads,
        mlp_dim=narrow.backbone.mlp_dims[0] if narrow.backbone.mlp_dims else None,
    )
    return model


def _with(config: DetectorConfig, **backbone_fields) -> DetectorConfig:
    out = copy.deepcopy(config)
    for key, value in backbone_fields.items():
        setattr(out.backbone, key, value)
    return out
