"""Parameter and MAC counts, measured with torch's FlopCounterMode."""

from __future__ import annotations

import copy
import functools
import json

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pbd_deploy.models.detector import Detector, DetectorConfig


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(config: DetectorConfig, batch: int = 1) -> dict[str, int]:
    """MACs of one window of the config's input (see `_count_macs`); cached per architecture."""
    arch = {k: v for k, v in config.to_dict().items() if k != "history"}
    return copy.deepcopy(_count_macs(json.dumps(arch, sort_keys=True), batch))


@functools.lru_cache(maxsize=256)
def _count_macs(config_json: str, batch: int) -> dict[str, int]:
    """MACs of one window of the config's input: {"total", "backbone", "head", "blocks"}.

    The model is rebuilt on the meta device, so this costs the same (about a second of
    dispatch overhead) for VideoMAE-H as for the tiny model, and it counts
    scaled_dot_product_attention, which FlopCounterMode
    misses on real CPU tensors (their fused kernel has no registered formula).
    MACs = FLOPs / 2 (every counted op is a multiply-accumulate).
    """
    config = DetectorConfig.from_dict(json.loads(config_json))
    with torch.device("meta"):
        model = Detector(config).eval()
        x = model.example_input(batch)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    per_module = counter.get_flop_counts()

    def macs(prefix):
        return int(sum(per_module.get(prefix, {}).values()) // 2)

    total = int(counter.get_total_flops() // 2)
    blocks = len(config.backbone.block_indices) if config.backbone else 0
    return {
        "total": total,
        "backbone": macs("Detector.backbone"),
        "head": macs("Detector.head"),
        # per kept block, in order: blocks keep the token count, so these simply add up
        "blocks": [macs(f"Detector.backbone.blocks.{p}") for p in range(blocks)],
    }
