import copy

import pytest
import torch

from pbd_deploy.bench.width import backbone_macs, init_narrow, narrow_config
from pbd_deploy.errors import PbdError
from pbd_deploy.models.io import load_model, save_model
from pbd_deploy.models.registry import model_config
from tests.conftest import tiny_config


def closed_form_block_macs(bb, seq: int) -> int:
    """MACs of one block per chunk of `seq` tokens, written out by hand."""
    inner, hidden = bb.attn_dim, bb.mlp_dim(0)
    linear = seq * (bb.dim * 3 * inner + inner * bb.dim + 2 * bb.dim * hidden)
    attention = 2 * seq * seq * inner  # q @ k^T and attn @ v
    return linear + attention


def dropped(config, n):
    out = copy.deepcopy(config)
    out.backbone.block_indices = out.backbone.block_indices[:-n]
    return out


@pytest.mark.parametrize("name", ["videomae-s", "videomae-b"])
def test_narrowed_real_models_match_the_depth_dropped_macs(name):
    config = model_config(name, ["a"], window=32)
    target = backbone_macs(dropped(config, 3))
    narrow = narrow_config(config, target)
    bb, nb = config.backbone, narrow.backbone
    # Heads are cut at their original size, the MLP shrinks, the depth stays.
    assert nb.heads < bb.heads and nb.attn_dim // nb.heads == bb.attn_dim // bb.heads
    assert len(nb.mlp_dims) == len(bb.block_indices) and nb.mlp_dims[0] < bb.mlp_dim(0)
    assert nb.mlp_dims[0] % 8 == 0
    # Independent check: the hand-written block MACs shrink by the depth-drop ratio (9/12).
    seq = 8 * 10 * 10  # tokens of one 16-frame 160x160 chunk
    ratio = closed_form_block_macs(nb, seq) / closed_form_block_macs(bb, seq)
    assert ratio == pytest.approx(9 / 12, abs=0.004)
    assert backbone_macs(narrow) == pytest.approx(target, rel=0.002)


def test_narrow_model_runs_saves_and_reloads(tmp_path):
    config = tiny_config()
    target = backbone_macs(dropped(config, 1))
    model = init_narrow(config, target)
    x = torch.randn(1, 3, 32, 32, 32)
    with torch.no_grad():
        logits, offsets = model(x)
    assert logits.shape[-1] == 3 and torch.isfinite(logits).all()
    assert model.config.history[-1]["stage"] == "narrow"
    loaded = load_model(save_model(model, tmp_path / "narrow"))
    assert loaded.config.backbone.head_dim == model.config.backbone.head_dim
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], logits)


def test_unreachable_targets_are_refused():
    config = tiny_config()
    with pytest.raises(PbdError, match="outside what narrowing reaches"):
        narrow_config(config, backbone_macs(config) * 2)
    with pytest.raises(PbdError, match="outside what narrowing reaches"):
        narrow_config(config, 1)
