"""LoRA through peft: inject adapters into the kept blocks, merge them back into plain weights.

Two verbs, as in peft: `inject_adapters` (the detector's Linear layers are wrapped in place)
and `merge_adapters` (W += scale * B A, wrappers removed, outputs checked against the
adapted model). Between the two, the detector trains as usual.
"""

from __future__ import annotations

import torch
from torch import nn

from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import Detector

MERGE_TOLERANCE = 1e-4  # relative: max |merged - adapted| / max |adapted|


def inject_adapters(model: Detector, targets: list[str], rank: int | None, alpha: float | None):
    """Wrap `targets` (e.g. "attn.qkv") of every kept block with LoRA adapters, in place.

    Trainable afterwards: the adapters, every norm, the patch embedding, the head and AdaTAD's
    temporal adapters where blocks have them (AdaTAD trains exactly those on a frozen ViT, so
    they adapt to the missing block as they adapted the ViT to the task); the block weights
    stay frozen. The default rank is width // 4, the default alpha the rank.

    Returns:
        The peft wrapper; `model` itself now runs with the adapters.
    """
    import peft

    rank = rank or max(1, model.config.backbone.dim // 4)
    names = check_targets(model, targets)
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha or rank, target_modules=names, lora_dropout=0.0, bias="none"
    )
    wrapped = peft.get_peft_model(model, config)
    for module in (model.backbone.patch_embed, model.head):
        module.requires_grad_(True)
    for block in model.backbone.blocks:
        if block.adapter is not None:
            block.adapter.requires_grad_(True)
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            module.requires_grad_(True)
    return wrapped


def check_targets(model: Detector, targets: list[str]) -> list[str]:
    """The full names of `targets` in every block; PbdError when one is not a Linear layer.

    Called before any work starts (compression checks it before its first forward pass).
    """
    names = [f"backbone.blocks.{p}.{t}" for p in range(len(model.backbone.blocks)) for t in targets]
    modules = dict(model.named_modules())
    wrong = [n for n in names if not isinstance(modules.get(n), nn.Linear)]
    if wrong:
        linear = sorted({n.split(".", 3)[3] for n, m in modules.items() if _in_block0(n, m)})
        raise PbdError(
            f"--lora-targets {wrong[0].split('.', 3)[3]!r} is not a Linear layer of "
            f"a block; choose from {', '.join(linear)}"
        )
    return names


def _in_block0(name: str, module: nn.Module) -> bool:
    return name.startswith("backbone.blocks.0.") and isinstance(module, nn.Linear)


@torch.no_grad()
def merge_adapters(wrapped, example: torch.Tensor) -> tuple[Detector, float]:
    """Fold the adapters into the weights; returns the plain detector and the merge error.

    Raises:
        RuntimeError: the merged model's outputs differ from the adapted model's by more
            than 1e-4 relative on `example` (a bug, never a user error).
    """
    model = wrapped.get_base_model()
    was_training = model.training
    model.eval()
    before = model(example)
    merged = wrapped.merge_and_unload()
    after = merged(example)
    error = max(
        ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item() for a, b in zip(after, before)
    )
    if error > MERGE_TOLERANCE:
        raise RuntimeError(f"merged LoRA model differs from the adapted one by {error:.2e}")
    merged.requires_grad_(True)
    return merged.train(was_training), error
