"""Model compression: Progressive Block Drop (score, drop, recover with LoRA, merge) and
channel pruning (heads and MLP units, recovered the same way).

`progressive_block_drop(model, data, config)` and `prune_channels(model, data, config)` are
the stages; `compress_model_dir` / `prune_model_dir` are `pbd-deploy compress` / `prune`.
They load on first use, so the CLI's option parsing stays cheap.
"""

from pbd_deploy.compress.config import BlockDropConfig, ChannelPruneConfig

__all__ = [
    "BlockDropConfig",
    "ChannelPruneConfig",
    "compress_model_dir",
    "progressive_block_drop",
    "prune_channels",
    "prune_model_dir",
]


def __getattr__(name):
    if name in ("compress_model_dir", "progressive_block_drop"):
        from pbd_deploy.compress import pbd

        return getattr(pbd, name)
    if name in ("prune_channels", "prune_model_dir"):
        from pbd_deploy.compress import channels

        return getattr(channels, name)
    raise AttributeError(f"module 'pbd_deploy.compress' has no attribute {name!r}")
