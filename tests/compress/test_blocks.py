import pytest
import torch

from pbd_deploy.compress.blocks import block_by_index, drop_block, list_blocks
from pbd_deploy.errors import PbdError


def forward_skipping(model, frames, skip):
    """The original model's forward with some blocks skipped, written out by hand."""
    bb = model.backbone
    x, grid = bb.embed(frames)
    for index, block in zip(bb.block_indices, bb.blocks):
        if index not in skip:
            x = block(x)
    feats = torch.nn.functional.interpolate(
        bb.pool(x, grid), size=model.config.head.length, mode="linear"
    )
    logits, offsets = model.head(feats)
    return torch.cat(logits, 1), torch.cat(offsets, 1)


def test_drop_block_removes_the_module_and_keeps_original_indices(tiny_model):
    small = drop_block(drop_block(tiny_model, 1), 3)
    assert list_blocks(small) == [0, 2]
    assert len(small.backbone.blocks) == 2
    assert small.config.backbone.block_indices == [0, 2]
    assert block_by_index(small, 2) is small.backbone.blocks[1]
    assert not any(isinstance(m, torch.nn.Identity) for m in small.backbone.blocks)
    frames = torch.randn(1, 3, 32, 32, 32)
    with torch.no_grad():
        expected = forward_skipping(tiny_model, frames, skip={1, 3})
        got = small(frames)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_dropping_a_missing_block_is_a_clear_error(tiny_model):
    small = drop_block(tiny_model, 2)
    with pytest.raises(PbdError, match="block 2 is not in the model"):
        drop_block(small, 2)
    with pytest.raises(PbdError, match="block 9"):
        drop_block(tiny_model, 9)
