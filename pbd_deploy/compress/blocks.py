"""The block-handle API: which backbone blocks exist, by original index, and removing one.

Every later stage (scoring, dropping, alignment, export) names blocks by their ORIGINAL
index in the uncompressed model, so a student block can always be paired with its teacher.
"""

from __future__ import annotations

import copy

from torch import nn

from pbd_deploy.errors import PbdError
from pbd_deploy.models.complexity import count_macs
from pbd_deploy.models.detector import Detector, DetectorConfig
from pbd_deploy.models.vit import BackboneConfig


def list_blocks(model: Detector) -> list[int]:
    """Original indices of the backbone blocks the model still has, in order."""
    if model.backbone is None:
        return []
    return list(model.config.backbone.block_indices)


def block_by_index(model: Detector, original_index: int) -> nn.Module:
    """The block module that had `original_index` in the uncompressed model."""
    return model.backbone.blocks[_position(model, original_index)]


def drop_block(model: Detector, original_index: int) -> Detector:
    """A copy of `model` with the block of original index `original_index` removed.

    The module is deleted from the ModuleList (not replaced by Identity), so parameters,
    MACs and exported graphs all shrink; the copy's config records the kept indices.
    """
    position = _position(model, original_index)
    if len(model.backbone.blocks) == 1:
        raise PbdError("cannot drop the last remaining backbone block")
    dropped = copy.deepcopy(model)
    del dropped.backbone.blocks[position]
    _remove_from_config(dropped.config.backbone, position)
    return dropped


def _remove_from_config(cfg: BackboneConfig, position: int) -> None:
    cfg.block_indices = cfg.block_indices[:position] + cfg.block_indices[position + 1 :]
    for name in ("mlp_dims", "block_heads"):  # per-block widths after channel pruning
        widths = getattr(cfg, name)
        if widths is not None:
            setattr(cfg, name, widths[:position] + widths[position + 1 :])


def block_macs(config: DetectorConfig) -> dict[int, int]:
    """MACs per window of each kept block, by original index (what dropping it saves).

    Blocks do not change the token count, so these add up: dropping a set of blocks saves
    the sum of their MACs.
    """
    return dict(zip(config.backbone.block_indices, count_macs(config)["blocks"]))


def _position(model: Detector, original_index: int) -> int:
    kept = list_blocks(model)
    if original_index not in kept:
        raise PbdError(f"block {original_index} is not in the model (kept blocks: {kept})")
    return kept.index(original_index)
