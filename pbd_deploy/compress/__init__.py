"""Model compression: Progressive Block Drop (score, drop, recover with LoRA, merge).

`progressive_block_drop(model, data, config)` is the stage; `compress_model_dir` is
`pbd-deploy compress`. They load on first use, so the CLI's option parsing stays cheap.
"""

from pbd_deploy.compress.config import BlockDropConfig

__all__ = ["BlockDropConfig", "compress_model_dir", "progressive_block_drop"]


def __getattr__(name):
    if name in ("compress_model_dir", "progressive_block_drop"):
        from pbd_deploy.compress import pbd

        return getattr(pbd, name)
    raise AttributeError(f"module 'pbd_deploy.compress' has no attribute {name!r}")
