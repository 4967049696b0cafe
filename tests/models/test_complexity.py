import pytest

from pbd_deploy.compress.blocks import drop_block, list_blocks
from pbd_deploy.models.complexity import count_macs, count_params
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.registry import MODELS, model_config


def analytic_backbone_macs(config) -> int:
    """VideoMAE MACs by hand: patch conv + per block (qkv, attention, proj, MLP)."""
    bb, inp = config.backbone, config.input
    chunks = inp.window // bb.chunk_frames
    grid = inp.crop // bb.patch
    n = bb.chunk_frames // bb.tubelet * grid * grid  # tokens per chunk
    c = bb.dim
    patch = n * c * 3 * bb.tubelet * bb.patch**2
    blocks = sum(
        n * 3 * c * c + 2 * n * n * c + n * c * c + 2 * n * c * bb.mlp_dim(i)
        for i in range(len(bb.block_indices))
    )
    return chunks * (patch + blocks)


@pytest.mark.parametrize("name", ["videomae-tiny", "videomae-s", "videomae-b"])
def test_backbone_macs_match_the_closed_form(name):
    config = model_config(name, ["a", "b"])
    assert count_macs(config)["backbone"] == analytic_backbone_macs(config)


def test_videomae_s_shape_check():
    """One 768-frame 160x160 window of VideoMAE-S: 12 blocks, 48 chunks of 800 tokens."""
    macs = count_macs(model_config("videomae-s", [f"c{i}" for i in range(20)]))
    assert 1.12e12 < macs["backbone"] < 1.13e12
    assert macs["total"] == macs["backbone"] + macs["head"]


def test_dropping_a_block_removes_exactly_its_macs_and_params():
    config = model_config("videomae-tiny", ["a", "b"])
    model = Detector(config)
    small = drop_block(model, 4)
    before, after = count_macs(model.config), count_macs(small.config)
    per_block = analytic_backbone_macs(config) - analytic_backbone_macs(small.config)
    assert before["backbone"] - after["backbone"] == per_block
    assert before["backbone"] / after["backbone"] == pytest.approx(12 / 11, rel=0.02)
    block_params = sum(p.numel() for p in model.backbone.blocks[4].parameters())
    assert count_params(model) - count_params(small) == block_params
    assert list_blocks(model) == list(range(12))  # the original is untouched


def test_every_named_model_builds_on_meta():
    for name in MODELS:
        config = model_config(name, ["a"])
        macs = count_macs(config)
        video = config.backbone is not None  # "features" models have no backbone
        assert macs["backbone"] == (analytic_backbone_macs(config) if video else 0), name
        assert macs["total"] == macs["backbone"] + macs["head"]
