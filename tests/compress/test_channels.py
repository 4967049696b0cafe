"""Channel pruning: exact removal of zeroed channels, closed-form MACs/params, budgets."""

import numpy as np
import pytest
import torch

from pbd_deploy.compress.channel_importance import SplitAttention, channel_importance
from pbd_deploy.compress.channels import allocate, plan_widths, prune_channels, prune_widths
from pbd_deploy.compress.config import ChannelPruneConfig
from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.models.complexity import count_macs, count_params
from pbd_deploy.models.detector import Detector, DetectorConfig
from pbd_deploy.models.io import load_model, save_model
from pbd_deploy.models.vit import BackboneConfig
from tests.conftest import tiny_config

DIM, HEADS, HEAD_DIM, HIDDEN, DEPTH = 32, 4, 8, 128, 4


def four_head_model(classes=("a", "b", "c"), seed=0) -> Detector:
    """The tiny test detector with 4 heads of 8 channels per block (MLP 128)."""
    config = tiny_config(list(classes), depth=DEPTH)
    config.backbone = BackboneConfig(dim=DIM, depth=DEPTH, heads=HEADS, img_size=32)
    torch.manual_seed(seed)
    return Detector(config).eval()


@torch.no_grad()
def zero_channels(model: Detector, heads: dict[int, list[int]], units: dict[int, list[int]]):
    """Zero every weight of the given heads (q, k, v rows, biases, proj columns) and units."""
    for p, block in enumerate(model.backbone.blocks):
        inner = HEADS * HEAD_DIM
        for h in heads.get(p, []):
            ch = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            for part in range(3):
                block.attn.qkv.weight[
                    part * inner + h * HEAD_DIM : part * inner + (h + 1) * HEAD_DIM
                ] = 0
            block.attn.q_bias[ch] = 0
            block.attn.v_bias[ch] = 0
            block.attn.proj.weight[:, ch] = 0
        for u in units.get(p, []):
            block.mlp.fc1.weight[u] = 0
            block.mlp.fc1.bias[u] = 0
            block.mlp.fc2.weight[:, u] = 0


@pytest.fixture(scope="module")
def classes(synth_data):
    return load_annotations(synth_data / "annotations.json").class_names


def test_split_attention_is_the_same_function(classes):
    block = four_head_model(classes).backbone.blocks[0]
    x = torch.randn(2, 9, DIM)
    torch.testing.assert_close(SplitAttention(block.attn)(x), block.attn(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["magnitude", "taylor", "hessian"])
def test_zeroed_channels_score_zero(classes, synth_data, method):
    model = four_head_model(classes)
    zero_channels(model, {0: [1], 2: [0, 3]}, {1: list(range(0, 128, 4))})
    data = TadDataset(synth_data, model.config)
    scores = channel_importance(model, data, data.split("train"), method, windows=4)
    for p in range(DEPTH):
        zero_h = {0: [1], 2: [0, 3]}.get(p, [])
        zero_u = list(range(0, 128, 4)) if p == 1 else []
        h, u = np.array(scores["heads"][p]), np.array(scores["units"][p])
        assert (h[zero_h] == 0).all() and (np.delete(h, zero_h) > 0).all()
        assert (u[zero_u] == 0).all() and (np.delete(u, zero_u) > 0).all()


@pytest.mark.parametrize("uniform", [True, False])
def test_pruning_zeroed_channels_keeps_outputs(classes, synth_data, uniform):
    """--epochs 0: removing exactly the zeroed heads and units leaves outputs unchanged."""
    model = four_head_model(classes)
    if uniform:  # one head and 32 units of every block
        heads = {p: [(p + 1) % HEADS] for p in range(DEPTH)}
        units = {p: list(range(p, HIDDEN, 4)) for p in range(DEPTH)}
    else:  # the same totals, unevenly: global allocation must find them
        heads = {0: [0, 2], 1: [3], 3: [1]}
        units = {
            0: list(range(64)),
            2: list(range(64, 128, 2))[:32],
            3: list(range(100, 128)) + [1, 5, 9, 13],
        }
    zero_channels(model, heads, units)
    config = ChannelPruneConfig(heads=3, mlp_ratio=3.0, uniform=uniform, importance="magnitude",
                                epochs=0, calib_fraction=1.0)  # fmt: skip
    pruned, report = prune_channels(model, synth_data, config)
    kept_heads = [sorted(set(range(HEADS)) - set(heads.get(p, []))) for p in range(DEPTH)]
    kept_units = [sorted(set(range(HIDDEN)) - set(units.get(p, []))) for p in range(DEPTH)]
    assert report["prune"]["kept_heads"] == kept_heads
    assert report["prune"]["kept_units"] == kept_units
    bb = pruned.config.backbone
    assert bb.block_heads == [len(k) for k in kept_heads] and bb.head_dim == HEAD_DIM
    assert bb.mlp_dims == [len(k) for k in kept_units] and sum(bb.mlp_dims) == 3 * DIM * DEPTH
    x = torch.randn(2, *model.example_input(1).shape[1:])
    with torch.no_grad():
        for a, b in zip(pruned(x), model(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert pruned.config.history[-1]["stage"] == "prune"


def test_macs_and_params_fall_by_the_closed_form(classes, tmp_path):
    """Each head costs n(3cd + 2nd + dc) MACs per chunk and 4cd + 2d params, each MLP unit
    2nc MACs and 2c + 1 params (n tokens per chunk, c width, d head size)."""
    model = four_head_model(classes)
    heads = [[0, 1, 2], [3], [0, 1, 2, 3], [1, 2]]
    units = [list(range(100)), list(range(3, 128)), list(range(128)), [7]]
    pruned = prune_widths(model, heads, units)
    cfg = model.config
    chunks, n = _tokens(cfg)
    c, d = DIM, HEAD_DIM
    removed_heads = HEADS * DEPTH - sum(map(len, heads))
    removed_units = HIDDEN * DEPTH - sum(map(len, units))
    head_macs = chunks * n * (3 * c * d + 2 * n * d + d * c)
    unit_macs = chunks * 2 * n * c
    before, after = count_macs(cfg), count_macs(pruned.config)
    assert before["total"] - after["total"] == removed_heads * head_macs + removed_units * unit_macs
    assert before["head"] == after["head"]
    params = removed_heads * (4 * c * d + 2 * d) + removed_units * (2 * c + 1)
    assert count_params(model) - count_params(pruned) == params
    # the result reloads from its directory without the script that made it
    reloaded = load_model(save_model(pruned, tmp_path / "p"))
    x = model.example_input(1)
    torch.testing.assert_close(reloaded(x), pruned(x), rtol=0, atol=0)


@pytest.mark.parametrize("target", [0.75, 0.6])
def test_target_macs_is_met(classes, target):
    cfg = four_head_model(classes).config
    total = count_macs(cfg)["total"]
    heads, units = plan_widths(cfg, ChannelPruneConfig(target_macs=target, uniform=True))
    # global allocation moves channels between blocks, but keeps the same totals
    assert (heads, units) == plan_widths(cfg, ChannelPruneConfig(target_macs=target))
    pruned = prune_widths(Detector(cfg), *_first(heads, units))
    macs = count_macs(pruned.config)["total"]
    chunks, n = _tokens(cfg)
    per_unit = chunks * 2 * n * DIM  # units are cut per block, rounded up: <= 1 extra each
    assert target * total - DEPTH * per_unit < macs <= target * total


def _tokens(cfg):
    """Chunks per window and tokens per chunk."""
    bb = cfg.backbone
    grid = cfg.input.crop // bb.patch
    return cfg.input.window // bb.chunk_frames, bb.chunk_frames // bb.tubelet * grid * grid


def _first(heads, units):
    return [list(range(h)) for h in heads], [list(range(u)) for u in units]


def test_global_allocation_keeps_the_most_important():
    scores = [[0.1, 5.0, 0.2], [3.0, 4.0, 0.05], [0.01, 0.02, 0.03]]
    assert allocate(scores, [2, 2, 2], uniform=True) == [[1, 2], [0, 1], [1, 2]]
    # 6 kept overall; block 2 keeps only its best one
    assert allocate(scores, [2, 2, 2], uniform=False) == [[0, 1, 2], [0, 1], [2]]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(target_macs=0.05), "would remove every"),
        (dict(heads=5, uniform=True), "has only 4"),
        (dict(mlp_ratio=2.01), "not a whole number"),
        (dict(mlp_ratio=4.5), "more than the model has"),
    ],
)
def test_budgets_that_cannot_be_met(classes, options, message):
    with pytest.raises(PbdError, match=message):
        plan_widths(four_head_model(classes).config, ChannelPruneConfig(**options))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(), "give a budget"),
        (dict(target_macs=0.7, heads=2), "not both"),
        (dict(heads=0), "at least 1"),
        (dict(heads=2, importance="l1"), "unknown --importance"),
        (dict(target_macs=1.2), "fraction of MACs kept"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(PbdError, match=message):
        ChannelPruneConfig(**options)


def test_feature_mode_model_is_refused():
    config = DetectorConfig.from_dict(
        {"name": "f", "class_names": ["a"], "backbone": None,
         "input": {"mode": "features", "feature_dim": 16}}
    )  # fmt: skip
    with pytest.raises(PbdError, match="feature-mode models have no blocks"):
        plan_widths(config, ChannelPruneConfig(heads=1))
