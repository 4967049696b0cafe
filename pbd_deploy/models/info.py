"""What a model directory holds: architecture, kept blocks, size, MACs and history."""

from __future__ import annotations

from pathlib import Path

from pbd_deploy.models.complexity import count_macs, count_params
from pbd_deploy.models.io import load_model


def model_info(model_dir: str | Path) -> dict:
    """A JSON-ready summary of a model directory (what `pbd-deploy info --json` prints)."""
    model = load_model(model_dir)
    cfg = model.config
    bb = cfg.backbone
    macs = count_macs(cfg)
    return {
        "name": cfg.name,
        "path": str(model_dir),
        "mode": cfg.input.mode,
        "classes": cfg.class_names,
        "params": count_params(model),
        "macs": macs["total"],
        "macs_backbone": macs["backbone"],
        "macs_head": macs["head"],
        "depth": bb.depth if bb else 0,
        "kept_blocks": list(bb.block_indices) if bb else [],
        "width": bb.dim if bb else cfg.input.feature_dim,
        # per kept block, after channel pruning (prune): attention heads and MLP hidden units
        "block_heads": [bb.heads_at(p) for p in range(len(bb.block_indices))] if bb else [],
        "mlp_dims": [bb.mlp_dim(p) for p in range(len(bb.block_indices))] if bb else [],
        "input": cfg.input.__dict__ | {"mean": list(cfg.input.mean), "std": list(cfg.input.std)},
        "history": cfg.history,
    }
