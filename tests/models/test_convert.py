import re

import pytest
import torch
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.errors import PbdError
from pbd_deploy.models.convert import ConvertConfig, convert_checkpoint
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import load_model
from pbd_deploy.models.registry import model_config
from tests.conftest import tiny_config


def to_opentad(model):
    """Our backbone's weights under mmaction's key names (an OpenTAD VideoMAE backbone)."""
    names = {
        "mlp.fc1": "mlp.layers.0.0",
        "mlp.fc2": "mlp.layers.1",
        "patch_embed": "patch_embed.projection",
    }
    state = {}
    for key, value in model.backbone.state_dict().items():
        for ours, theirs in names.items():
            key = key.replace(ours, theirs)
        state[f"backbone.model.backbone.{key}"] = value.clone()
    return state


def partial(**options):
    """Backbone-only checkpoints leave our head freshly initialised: allowed explicitly."""
    return ConvertConfig(allow_partial=True, **options)


def test_opentad_checkpoint_converts_to_the_same_backbone(tmp_path):
    torch.manual_seed(0)
    source = Detector(tiny_config()).eval()
    torch.save({"state_dict": to_opentad(source)}, tmp_path / "adatad.pth")
    names = source.config.class_names
    with pytest.raises(PbdError, match="--allow-partial"):  # the head would be re-initialised
        convert_checkpoint(tmp_path / "adatad.pth", names, ConvertConfig(), tiny_config())
    model, conversion = convert_checkpoint(tmp_path / "adatad.pth", names, partial(), tiny_config())
    assert conversion.source_format == "mmaction"
    assert conversion.reinitialised and all(k.startswith("head.") for k in conversion.reinitialised)
    frames = torch.randn(1, 3, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().backbone(frames), source.backbone(frames))


def test_huggingface_videomae_gives_the_same_tokens(tmp_path):
    """Independent reference: transformers' own VideoMAE implementation."""
    import transformers  # a [dev] dependency: this reference must run, not skip
    from safetensors.torch import save_file

    hf_config = transformers.VideoMAEConfig(
        image_size=32,
        patch_size=16,
        num_frames=16,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=128,
        use_mean_pooling=False,
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    torch.manual_seed(0)
    hf = transformers.VideoMAEModel(hf_config).eval()
    with torch.no_grad():  # non-zero q/v biases so a wrong mapping shows
        for layer in hf.encoder.layer:
            attn = layer.attention.attention
            for name in ("q_bias", "v_bias"):
                if hasattr(attn, name):
                    getattr(attn, name).normal_()
            for lin in (attn.query, attn.value):
                if lin.bias is not None:
                    lin.bias.normal_()
    state = {f"videomae.{k}": v.contiguous() for k, v in hf.state_dict().items()}
    save_file(state, str(tmp_path / "hf.safetensors"))
    model, conversion = convert_checkpoint(
        tmp_path / "hf.safetensors", ["a", "b"], partial(), tiny_config()
    )
    assert conversion.source_format == "huggingface"
    frames = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        expected = hf(frames.transpose(1, 2)).last_hidden_state  # HF takes (B, T, C, H, W)
        x, _ = model.backbone.embed(frames)
        for block in model.backbone.blocks:
            x = block(x)
        got = model.backbone.norm(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_checkpoint_of_another_architecture_lists_the_mismatch(tmp_path):
    wide = tiny_config()
    wide.backbone.dim, wide.backbone.depth, wide.backbone.block_indices = 64, 5, None
    wide.backbone.__post_init__()
    wide.head.in_dim = 64
    torch.save(to_opentad(Detector(wide)), tmp_path / "wide.pth")
    with pytest.raises(PbdError) as err:
        convert_checkpoint(tmp_path / "wide.pth", ["a", "b"], partial(), tiny_config())
    message = str(err.value)
    assert "\n" not in message
    assert re.search(r"wrong shapes \[.*patch_embed\.projection\.bias \(64,\) != \(32,\)", message)


def test_unreadable_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PbdError, match="cannot read checkpoint"):
        convert_checkpoint(tmp_path / "bad.pth", ["a"], partial(), tiny_config())
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(PbdError, match="unrecognised checkpoint"):
        convert_checkpoint(tmp_path / "other.pth", ["a"], partial(), tiny_config())


def test_convert_command_writes_a_loadable_model_dir(tmp_path):
    source = Detector(model_config("videomae-tiny", ["x", "y"]))
    torch.save(to_opentad(source), tmp_path / "tiny.pth")
    torch.save(to_opentad(Detector(tiny_config())), tmp_path / "other.pth")

    def convert(ckpt, out):
        args = ["convert", str(tmp_path / ckpt), "--model", "videomae-tiny", "--allow-partial"]
        return CliRunner().invoke(main, [*args, "--out", str(tmp_path / out), "--classes", "x,y"])

    result = convert("tiny.pth", "out")
    assert result.exit_code == 0, result.output
    loaded = load_model(tmp_path / "out")
    torch.testing.assert_close(
        loaded.backbone.blocks[3].attn.qkv.weight, source.backbone.blocks[3].attn.qkv.weight
    )
    assert loaded.config.history[-1]["stage"] == "convert"
    result = convert("other.pth", "o2")  # a 4-block width-32 backbone into videomae-tiny
    assert result.exit_code == 2 and "does not match" in result.output
    assert not (tmp_path / "o2").exists()
