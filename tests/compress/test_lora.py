"""LoRA through peft: what trains, and a merge that equals the adapted model."""

import pytest
import torch
from safetensors.torch import load_file

from pbd_deploy.compress.blocks import drop_block
from pbd_deploy.compress.lora import inject_adapters, merge_adapters
from pbd_deploy.errors import PbdError
from pbd_deploy.models.io import save_model


def test_only_adapters_norms_patch_embedding_and_head_train(tiny_model):
    model = drop_block(tiny_model, 2)
    inject_adapters(model, ["attn.qkv", "attn.proj"], rank=4, alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "backbone.blocks.0.attn.qkv.lora_A.default.weight" in trainable
    assert "backbone.blocks.2.attn.proj.lora_B.default.weight" in trainable
    assert "backbone.blocks.0.norm1.weight" in trainable
    assert "backbone.patch_embed.weight" in trainable
    assert any(n.startswith("head.") for n in trainable)
    assert "backbone.blocks.0.attn.qkv.base_layer.weight" not in trainable
    assert "backbone.blocks.0.mlp.fc1.weight" not in trainable
    assert not any("mlp" in n and "lora" in n for n in trainable)
    assert model.backbone.blocks[0].attn.qkv.lora_A["default"].weight.shape == (4, 32)


def test_merged_model_equals_adapted_model_and_saves_without_adapters(tiny_model, tmp_path):
    model = drop_block(tiny_model, 0)
    wrapped = inject_adapters(model, ["attn.qkv", "attn.proj", "mlp.fc1"], rank=4, alpha=8)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # fresh adapters are zero: make them matter
    x = torch.randn(1, 3, 32, 32, 32)
    with torch.no_grad():
        adapted = model.eval()(x)
        plain = drop_block(tiny_model, 0)(x)
    assert (adapted[0] - plain[0]).abs().max() > 1e-3  # the adapters change the outputs
    merged, error = merge_adapters(wrapped, x)
    with torch.no_grad():
        got = merged.eval()(x)
    for a, b in zip(got, adapted):
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-4
    assert error <= 1e-4
    keys = set(load_file(str(save_model(merged, tmp_path / "m") / "model.safetensors")))
    assert keys == set(drop_block(tiny_model, 0).state_dict())
    assert not any("lora" in k or "base_layer" in k for k in keys)


def test_a_target_that_is_not_a_linear_layer_is_a_clear_error(tiny_model):
    with pytest.raises(PbdError, match="attn.qkvv.*choose from.*attn.proj"):
        inject_adapters(tiny_model, ["attn.qkvv"], rank=2, alpha=None)
