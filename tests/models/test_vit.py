import math

import pytest
import torch

from pbd_deploy.errors import PbdError
from pbd_deploy.models.vit import Attention, BackboneConfig, VideoMAEBackbone, sincos_table


def test_sincos_table_matches_the_closed_form():
    table = sincos_table(50, 16)
    for pos in (0, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_attention_equals_explicit_softmax_with_q_and_v_bias_only():
    torch.manual_seed(0)
    attn = Attention(16, heads=2)
    torch.nn.init.normal_(attn.q_bias)
    torch.nn.init.normal_(attn.v_bias)
    x = torch.randn(3, 10, 16)
    w = attn.qkv.weight
    q = x @ w[:16].T + attn.q_bias
    k = x @ w[16:32].T  # VideoMAE has no key bias
    v = x @ w[32:].T + attn.v_bias
    split = lambda t: t.reshape(3, 10, 2, 8).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = attn.proj((weights @ split(v)).transpose(1, 2).reshape(3, 10, 16))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_chunks_are_processed_independently_and_pooled_over_space():
    torch.manual_seed(0)
    backbone = VideoMAEBackbone(BackboneConfig(dim=32, depth=2, heads=2, img_size=32)).eval()
    frames = torch.randn(1, 3, 48, 32, 32)  # three 16-frame chunks
    with torch.no_grad():
        whole = backbone(frames)
        parts = [backbone(frames[:, :, i * 16 : (i + 1) * 16]) for i in range(3)]
    assert whole.shape == (1, 32, 24)  # tubelet 2 -> 8 steps per chunk
    torch.testing.assert_close(whole, torch.cat(parts, dim=2))


def test_position_embedding_is_interpolated_for_another_resolution():
    backbone = VideoMAEBackbone(BackboneConfig(dim=32, depth=1, heads=2, img_size=32))
    same = backbone.position_embedding(8, 2, 2)
    assert torch.equal(same, backbone.pos_embed)
    bigger = backbone.position_embedding(8, 3, 3)
    assert bigger.shape == (8 * 9, 32)
    out = backbone(torch.randn(1, 3, 16, 48, 48))
    assert out.shape == (1, 32, 8)


def test_window_must_be_a_multiple_of_the_chunk():
    backbone = VideoMAEBackbone(BackboneConfig(dim=32, depth=1, heads=2, img_size=32))
    with pytest.raises(PbdError, match="multiple of the 16-frame chunk"):
        backbone(torch.randn(1, 3, 20, 32, 32))


def test_block_outputs_are_returned_in_order():
    backbone = VideoMAEBackbone(BackboneConfig(dim=32, depth=3, heads=2, img_size=32)).eval()
    frames = torch.randn(1, 3, 16, 32, 32)
    x, _ = backbone.embed(frames)
    _, blocks = backbone(frames, return_blocks=True)
    for block, out in zip(backbone.blocks, blocks):
        x = block(x)
        torch.testing.assert_close(out, x)


def test_drop_path_is_identity_in_eval_and_unbiased_in_training():
    from pbd_deploy.models.vit import drop_path

    x = torch.ones(2000, 3, 4)
    assert torch.equal(drop_path(x, 0.25, training=False), x)
    y = drop_path(x, 0.25, training=True)
    per_sample = y[:, 0, 0]
    kept = per_sample[per_sample != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))
    assert (y == y[:, :1, :1]).all()  # a whole sample's branch is kept or dropped
    assert per_sample.mean().item() == pytest.approx(1.0, abs=0.06)
