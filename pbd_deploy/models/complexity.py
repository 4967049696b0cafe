"""Parameter and MAC counts, measured with torch's FlopCounterMode."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pbd_deploy.models.detector import Detector, DetectorConfig


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(config: DetectorConfig, batch: int = 1) -> dict[str, int]:
    """MACs of one window of the config's input: {"total", "backbone", "head"}.

    The model is rebuilt on the meta device, so this costs milliseconds even for
    VideoMAE-H, and it counts scaled_dot_product_attention, which FlopCounterMode
    misses on real CPU tensors (their fused kernel has no registered formula).
    MACs = FLOPs / 2 (every counted op is a multiply-accumulate).
    """
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
    return {"total": total, "backbone": macs("Detector.backbone"), "head": macs("Detector.head")}
