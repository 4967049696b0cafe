"""The GEMM picture for one architecture: full width (also the depth-dropped model's
shapes) against the width-reduced model with the same MACs as dropping `drop` blocks."""

from __future__ import annotations

import copy

from pbd_deploy.bench.gemm import GemmConfig, gemm_sweep
from pbd_deploy.bench.width import backbone_macs, narrow_config
from pbd_deploy.errors import PbdError
from pbd_deploy.models.registry import model_config


def equal_macs_variants(name: str, drop: int):
    """(full, depth-dropped, narrowed) configs of architecture `name`."""
    full = model_config(name, ["action"])
    if full.backbone is None:
        raise PbdError(f"{name} has no backbone to probe")
    kept = len(full.backbone.block_indices)
    if not 0 < drop < kept:
        raise PbdError(f"--drop must be between 1 and {kept - 1}, not {drop}")
    depth = copy.deepcopy(full)
    depth.backbone.block_indices = depth.backbone.block_indices[: kept - drop]
    return full, depth, narrow_config(full, backbone_macs(depth))


def probe_model(name: str, drop: int, config: GemmConfig, progress=None) -> dict:
    """Sweep the block GEMMs of `name` at full width and at the equal-MACs narrowed width.

    The summary compares the backbone's GEMM time: dropping depth runs (blocks - drop)
    full-width blocks, narrowing runs every block at the thinner shapes.
    """
    full, depth, narrow = equal_macs_variants(name, drop)
    variants = {"full": full.backbone, "narrow": narrow.backbone}
    rows = gemm_sweep(variants, config, progress)
    blocks = len(full.backbone.block_indices)
    block = {(r["variant"], r["tokens"]): r for r in rows if r["op"] == "block"}
    summary = []
    for tokens in config.tokens:
        f, n = block["full", tokens], block["narrow", tokens]
        summary.append(
            {
                "tokens": tokens,
                "full_gflops_per_s": f["gflops_per_s"],
                "narrow_gflops_per_s": n["gflops_per_s"],
                "narrow_vs_full_efficiency": n["gflops_per_s"] / f["gflops_per_s"],
                "depth_gemm_speedup": blocks / (blocks - drop),
                "width_gemm_speedup": f["seconds"] / n["seconds"],
                "width_ideal_speedup": f["flops"] / n["flops"],
            }
        )
    nb = narrow.backbone
    note = (
        f"depth: {blocks - drop} of {blocks} full blocks; width: {blocks} blocks with "
        f"{nb.heads} heads x {nb.attn_dim // nb.heads} and MLP {nb.mlp_dims[0]}"
    )
    return {
        "model": name,
        "drop": drop,
        "config": vars(config),
        "variants": {
            k: {
                "heads": c.backbone.heads,
                "attn_dim": c.backbone.attn_dim,
                "mlp_dim": c.backbone.mlp_dim(0),
                "blocks": len(c.backbone.block_indices),
                "backbone_gmacs": backbone_macs(c) / 1e9,
            }
            for k, c in (("full", full), ("depth", depth), ("narrow", narrow))
        },
        "variants_note": note,
        "rows": rows,
        "summary": summary,
    }
