"""`convert --preset NAME`: the published AdaTAD configs, shipped with the package.

pbd_deploy/models/opentad_presets.json was written by tests/fixtures/opentad/make_presets.py
from OpenTAD's config files through mmengine's own reader. Here the presets are checked
against the settings published with AdaTAD (the paper's and the configs' numbers, written
out independently below), and used to convert checkpoints whose tensor names and shapes are
those of OpenTAD's detector built at the real VideoMAE-S size (shapes_*.json, recorded from
OpenTAD's `build_detector`).
"""

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.errors import PbdError
from pbd_deploy.models.convert import ConvertConfig, convert_checkpoint
from pbd_deploy.models.opentad_config import get, opentad_preset, preset_names
from pbd_deploy.models.vit import sincos_table

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "opentad"
# AdaTAD (CVPR 2024) VideoMAE sizes: width, depth, heads
SIZES = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "h": (1280, 32, 16)}
THUMOS_TIOU = [0.3, 0.4, 0.5, 0.6, 0.7]
ANET_TIOU = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def test_every_published_adatad_size_and_the_pbd_configs_are_presets():
    adatad = [f"adatad-{data}-videomae-{size}" for data in ("thumos", "anet") for size in SIZES]
    pbd = ["pbd-thumos-videomae-s", "pbd-thumos-videomae-l", "pbd-anet-videomae-s"]
    assert preset_names() == sorted(adatad + pbd)


@pytest.mark.parametrize("name", ["pbd-thumos-videomae-s", "pbd-thumos-videomae-l"])
def test_pbd_presets_are_longlora_backbones_with_the_thumos_settings(name):
    cfg, adatad = opentad_preset(name), opentad_preset(name.replace("pbd-", "adatad-"))
    vit = get(cfg, "model.backbone.backbone")
    assert vit["type"] == "VisionTransformerLongLoRA" and "adapter_index" not in vit
    assert vit["lora_rank"] == vit["embed_dims"] // 4
    for key in ("post_processing", "evaluation.tiou_thresholds", "window_size",
                "dataset.test.window_overlap_ratio", "model.projection", "model.rpn_head"):  # fmt: skip
        assert get(cfg, key) == get(adatad, key), key


@pytest.mark.parametrize("size", sorted(SIZES))
def test_thumos_presets_hold_the_published_settings(size):
    cfg = opentad_preset(f"adatad-thumos-videomae-{size}")
    vit = get(cfg, "model.backbone.backbone")
    assert (vit["embed_dims"], vit["depth"], vit["num_heads"]) == SIZES[size]
    assert vit["adapter_index"] == list(range(SIZES[size][1]))  # adapters in every block
    assert (vit["img_size"], vit["patch_size"], vit["num_frames"]) == (224, 16, 16)
    assert get(cfg, "window_size") == 768 and get(cfg, "dataset.test.window_overlap_ratio") == 0.5
    assert get(cfg, "dataset.test.feature_stride") == 4  # every 4th frame: 7.5 fps of 30
    assert get(cfg, "model.projection.attn_cfg.n_mha_win_size") == -1  # global attention
    assert get(cfg, "model.rpn_head.num_classes") == 20
    assert get(cfg, "post_processing.nms") == {
        "use_soft_nms": True, "sigma": 0.7, "max_seg_num": 2000, "multiclass": True,
        "voting_thresh": 0.7,
    }  # fmt: skip
    assert get(cfg, "evaluation.tiou_thresholds") == THUMOS_TIOU


@pytest.mark.parametrize("size", sorted(SIZES))
def test_anet_presets_hold_the_published_settings(size):
    cfg = opentad_preset(f"adatad-anet-videomae-{size}")
    vit = get(cfg, "model.backbone.backbone")
    assert (vit["embed_dims"], vit["depth"], vit["num_heads"]) == SIZES[size]
    assert get(cfg, "resize_length") == 192 and get(cfg, "scale_factor") == 4  # 768 frames
    assert get(cfg, "model.rpn_head.num_classes") == 1  # class-agnostic + video classifier
    assert get(cfg, "post_processing.nms") == {
        "use_soft_nms": True, "sigma": 0.7, "max_seg_num": 100, "min_score": 0.001,
        "multiclass": False, "voting_thresh": 0.9,
    }  # fmt: skip
    assert get(cfg, "post_processing.external_cls.topk") == 2
    assert get(cfg, "evaluation.tiou_thresholds") == ANET_TIOU


def real_size_checkpoint(name: str, path: Path) -> Path:
    """A checkpoint in OpenTAD's layout (DDP `module.` keys) at the recorded real shapes."""
    shapes = json.loads((FIXTURES / f"shapes_{name}.json").read_text())
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("pos_embed"):  # VideoMAE's fixed table, checked by convert
            state[key] = sincos_table(shape[1], shape[2]).reshape(shape)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.02
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


@pytest.fixture(scope="module")
def thumos_s(tmp_path_factory):
    return real_size_checkpoint(
        "adatad-thumos-videomae-s", tmp_path_factory.mktemp("ckpt") / "thumos_s.pth"
    )


def test_preset_converts_the_real_videomae_s_layout(thumos_s):
    classes = [f"c{i}" for i in range(20)]
    config = ConvertConfig(preset="adatad-thumos-videomae-s")
    model, conversion = convert_checkpoint(thumos_s, classes, config)
    c = model.config
    assert (c.backbone.dim, c.backbone.depth, c.backbone.heads) == SIZES["s"]
    assert c.backbone.adapter_indices == list(range(12)) and c.backbone.img_size == 224
    assert (c.head.dim, c.head.levels, c.head.attn_window, c.head.heads) == (512, 6, -1, 4)
    assert (c.input.window, c.input.stride, c.input.resize, c.input.crop) == (768, 384, 160, 160)
    assert not conversion.unplaced and not conversion.reinitialised  # strict: every tensor
    shapes = json.loads((FIXTURES / "shapes_adatad-thumos-videomae-s.json").read_text())
    skipped = [k for k in shapes if k.endswith(("pos_embed", "num_batches_tracked"))]
    assert sum(p.numel() for p in model.parameters()) >= sum(
        math.prod(v) for k, v in shapes.items() if k not in skipped and "fc_norm" not in k
    ) - sum(math.prod(v) for k, v in shapes.items() if "loss_normalizer" in k)


def test_anet_preset_converts_the_real_videomae_s_layout(tmp_path):
    ckpt = real_size_checkpoint("adatad-anet-videomae-s", tmp_path / "anet_s.pth")
    model, conversion = convert_checkpoint(
        ckpt, ["action"], ConvertConfig(preset="adatad-anet-videomae-s")
    )
    c = model.config
    assert (c.backbone.dim, c.backbone.depth, c.backbone.heads) == SIZES["s"]
    assert (c.head.dim, c.head.length, c.head.abs_pe, c.head.attn_window) == (256, 192, True, -1)
    assert not conversion.unplaced and not conversion.reinitialised
    assert model.head.projection.pos_embed.shape == (1, 256, 192)


def test_pbd_preset_converts_a_compressed_longlora_checkpoint(tmp_path):
    """OpenTAD's VideoMAE-S layout without adapters, with PBD's LongLoRA pairs (names and
    shapes as PBD's code writes them, see the pbd_longlora fixture) and block 3 dropped."""
    src = torch.load(real_size_checkpoint("adatad-thumos-videomae-s", tmp_path / "s.pth"))
    dim, rank, prefix = 384, 96, "module.backbone.model.backbone.blocks."
    state, gen = {}, torch.Generator().manual_seed(1)
    for key, value in src["state_dict"].items():
        if ".adapter." not in key and not key.startswith(f"{prefix}3."):
            state[key] = value  # PBD keeps the original numbers: blocks 0, 1, 2, 4, ...
    kept = [b for b in range(12) if b != 3]
    for block in kept:
        for name, out in (("lora_qkv", 3 * dim), ("lora_proj", dim)):
            state[f"{prefix}{block}.attn.{name}.A"] = torch.randn(dim, rank, generator=gen) * 0.01
            state[f"{prefix}{block}.attn.{name}.B"] = torch.randn(rank, out, generator=gen) * 0.01
    ckpt = tmp_path / "pbd.pth"
    torch.save({"state_dict": state}, ckpt)
    classes = [f"c{i}" for i in range(20)]
    model, conversion = convert_checkpoint(
        ckpt, classes, ConvertConfig(preset="pbd-thumos-videomae-s")
    )
    assert model.config.backbone.block_indices == kept and not model.config.backbone.adapter_indices
    assert conversion.folded_lora == 2 * len(kept) and not conversion.unplaced
    assert model.config.input.window == 768 and model.config.head.dim == 512
    with pytest.raises(PbdError, match="adapter_index is .* there, \\[\\] in the checkpoint"):
        convert_checkpoint(ckpt, classes, ConvertConfig(preset="adatad-thumos-videomae-s"))


def test_preset_of_another_size_is_one_line_naming_the_setting(thumos_s, tmp_path):
    result = CliRunner().invoke(main, [
        "convert", str(thumos_s), "--preset", "adatad-thumos-videomae-l", "--num-classes", "20",
        "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: preset adatad-thumos-videomae-l does not fit this checkpoint: "
        "model.backbone.backbone.embed_dims is 1024 there, 384 in the checkpoint (give the "
        "config or preset it was trained with)"
    ]
    assert not (tmp_path / "out").exists()


def test_preset_of_another_dataset_is_refused(thumos_s):
    with pytest.raises(PbdError, match="out_channels is 256 there, 512 in the checkpoint"):
        convert_checkpoint(
            thumos_s, [f"c{i}" for i in range(20)], ConvertConfig(preset="adatad-anet-videomae-s")
        )


def test_tiny_checkpoint_with_a_real_preset_and_bad_options(tmp_path):
    with pytest.raises(PbdError, match="does not fit this checkpoint: .*embed_dims"):
        convert_checkpoint(
            FIXTURES / "adatad_global.pth",
            ["Jump", "Throw", "Swing"],
            ConvertConfig(preset="adatad-thumos-videomae-s"),
        )
    with pytest.raises(PbdError, match="unknown OpenTAD preset 'thumos'; choose one of adatad-"):
        ConvertConfig(preset="thumos")
    with pytest.raises(PbdError, match="give --opentad-config or --preset, not both"):
        ConvertConfig(preset="adatad-thumos-videomae-s", opentad_config="x.py")
