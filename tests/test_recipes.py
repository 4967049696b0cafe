"""--recipe quick|paper: the presets, weight-decay groups, drop-path schedule, augmentations."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.compress import BlockDropConfig
from pbd_deploy.compress.blocks import drop_block
from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.core.video import normalize
from pbd_deploy.data.augment import Augment, apply_augment, draw_augment
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import Detector
from pbd_deploy.train import TrainConfig, depth_wise_drop_path, param_groups
from tests.conftest import tiny_config


def test_presets_and_explicit_options_on_top():
    assert TrainConfig.from_recipe("quick") == TrainConfig()
    paper = TrainConfig.from_recipe("paper", epochs=3)
    assert (paper.lr, paper.epochs, paper.warmup_epochs) == (1e-4, 3, 5.0)
    assert paper.ema and paper.augment and not paper.decay_norms and paper.drop_path == 0.1
    recovery = BlockDropConfig.from_recipe("paper", drop=1)
    assert (recovery.lr, recovery.epochs, recovery.warmup_epochs) == (1e-4, 60, 5.0)
    assert BlockDropConfig.from_recipe("quick") == BlockDropConfig()
    with pytest.raises(PbdError, match="unknown --recipe"):
        TrainConfig(recipe="long")


def test_no_weight_decay_on_norms_biases_and_scales():
    model = Detector(tiny_config())
    decay, plain = param_groups(model, 0.05, decay_norms=False)
    assert plain["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    named = {id(p): n for n, p in model.named_parameters()}
    plain_names = {named[id(p)] for p in plain["params"]}
    assert "backbone.blocks.0.norm1.weight" in plain_names
    assert "backbone.blocks.0.attn.q_bias" in plain_names
    assert "backbone.blocks.0.attn.qkv.weight" not in plain_names
    assert all(p.ndim > 1 for p in decay["params"])
    (single,) = param_groups(model, 0.05)  # quick: one group, as before
    assert len(single["params"]) == len(list(model.parameters()))


def test_drop_path_rises_linearly_with_the_original_depth():
    model = drop_block(Detector(tiny_config(depth=4)), 1)  # kept original blocks 0, 2, 3
    depth_wise_drop_path(model, 0.1)
    rates = [block.drop_path for block in model.backbone.blocks]
    assert rates == pytest.approx([0.0, 0.1 * 2 / 3, 0.1])


def test_augment_identity_and_flip_match_plain_normalisation():
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    mean, std = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)
    same = Augment((0, 0, 32, 32), False, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(apply_augment(frames, same, 32, mean, std),
                               normalize(frames, mean, std), atol=1e-4)  # fmt: skip
    flipped = Augment((0, 0, 32, 32), True, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(apply_augment(frames, flipped, 32, mean, std),
                               normalize(frames[:, :, ::-1], mean, std), atol=1e-4)  # fmt: skip
    darker = Augment((0, 0, 32, 32), False, (0.5, 1.0, 1.0))
    assert apply_augment(frames, darker, 32, mean, std).mean() < normalize(frames, mean, std).mean()
    rng = np.random.default_rng(1)
    for _ in range(50):
        top, left, h, w = draw_augment(rng, 36, 48).box
        assert 0 <= top <= 36 - h and 0 <= left <= 48 - w and 0.07 * 36 * 48 <= h * w


def test_augmented_windows_of_a_short_video_keep_90_to_100_percent(synth_data):
    classes = load_annotations(synth_data / "annotations.json").class_names
    dataset = TadDataset(synth_data, tiny_config(classes, window=256))  # longer than videos
    rng = np.random.default_rng(0)
    video = dataset.split("train")[0]
    steps, _ = dataset.info(video)
    for _ in range(10):
        start, count, crop = dataset.draw_window(video, rng, augment=True)
        assert 0.9 * steps - 1 <= count <= steps and start + count <= steps
        x, points, _, valid = dataset.training_sample(video, start, count, crop)
        assert x.shape == (3, 256, 32, 32) and valid == count * 16 / 256
        assert (points <= count * 16 / 256).all()


def test_train_cli_paper_recipe_with_explicit_epochs(synth_data, tmp_path):
    out = tmp_path / "m"
    result = CliRunner().invoke(main, ["train", "--data", str(synth_data), "--out", str(out),
                                       "--recipe", "paper", "--epochs", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((out / "train_log.json").read_text())["config"]
    assert config["recipe"] == "paper" and config["epochs"] == 1 and config["lr"] == 1e-4
    assert config["ema"] and config["augment"] and not config["decay_norms"]


def test_paper_recovery_selects_ema_weights(synth_data):
    from pbd_deploy.compress import progressive_block_drop

    torch.manual_seed(0)
    classes = load_annotations(synth_data / "annotations.json").class_names
    model = Detector(tiny_config(classes))
    config = BlockDropConfig.from_recipe("paper", drop_indices=[1], epochs=1, calib_fraction=1.0)
    small, report = progressive_block_drop(model, str(synth_data), config)
    (iteration,) = report["iterations"]
    assert len(iteration["epochs"]) == 1 and iteration["merge_error"] <= 1e-4
    assert small.config.backbone.block_indices == [0, 2, 3]
