"""The whole stage on a tiny model: physical removal, history, report, given indices, stop."""

import json

import pytest
import torch
from safetensors.torch import load_file

from pbd_deploy.compress import pbd
from pbd_deploy.compress.config import BlockDropConfig
from pbd_deploy.compress.pbd import compress_model_dir, progressive_block_drop
from pbd_deploy.models.complexity import count_macs, count_params
from pbd_deploy.models.info import model_info
from pbd_deploy.models.io import load_model


@pytest.fixture(scope="module")
def compressed(tiny_model_dir, synth_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pbd") / "small"
    config = BlockDropConfig(drop=2, epochs=1, calib_fraction=1.0, criterion="loss")
    report = compress_model_dir(tiny_model_dir, synth_data, out, config)
    return out, report


def test_blocks_are_physically_removed(compressed, tiny_model_dir):
    out, report = compressed
    base, small = load_model(tiny_model_dir), load_model(out)
    assert len(small.backbone.blocks) == 2
    assert small.config.backbone.block_indices == report["kept_blocks"]
    assert count_params(small) < count_params(base)
    assert count_macs(small.config)["backbone"] < count_macs(base.config)["backbone"]
    keys = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k or "base_layer" in k for k in keys)
    dropped = sorted(set(range(4)) - set(report["kept_blocks"]))
    assert not any(k.startswith(f"backbone.blocks.{len(small.backbone.blocks)}.") for k in keys)
    assert sorted(b for r in report["iterations"] for b in r["dropped"]) == dropped


def test_history_records_every_iteration(compressed):
    out, report = compressed
    history = [h for h in json.loads((out / "config.json").read_text())["history"]]
    entries = [h for h in history if h["stage"] == "compress"]
    assert [e["iteration"] for e in entries] == [1, 2]
    first, second = entries
    assert sorted(int(k) for k in first["scores"]) == [0, 1, 2, 3]  # every candidate scored
    assert len(second["scores"]) == 3
    for e in entries:
        for key in ("dropped", "macs", "params", "val_mAP_before", "val_mAP", "wall_s"):
            assert key in e
    assert first["macs"] > second["macs"]
    shown = model_info(out)["history"]
    assert [h["stage"] for h in shown].count("compress") == 2


def test_report_files(compressed):
    out, report = compressed
    saved = json.loads((out / "report.json").read_text())
    assert [r["iteration"] for r in saved["iterations"]] == [1, 2]
    assert saved["baseline"]["macs"] > saved["iterations"][-1]["macs"]
    epochs = saved["iterations"][0]["epochs"]
    assert {"loss", "cls", "reg", "feat", "kd_cls", "kd_reg", "val_mAP"} <= set(epochs[0])
    table = (out / "report.md").read_text()
    assert "| 1 | [" in table and "| 2 | [" in table
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(r["merge_error"] <= 1e-4 for r in saved["iterations"])


def test_given_indices_are_dropped_without_scoring(tiny_model_dir, synth_data):
    model = load_model(tiny_model_dir)
    config = BlockDropConfig(drop_indices=[3, 1], epochs=0)
    small, report = progressive_block_drop(model, synth_data, config)
    assert small.config.backbone.block_indices == [0, 2]
    assert [r["dropped"] for r in report["iterations"]] == [[3], [1]]
    assert all(r["scores"] == {} for r in report["iterations"])
    torch.testing.assert_close(  # recovery off: the kept blocks keep the teacher's weights
        small.backbone.blocks[1].attn.qkv.weight, model.backbone.blocks[2].attn.qkv.weight
    )


def test_target_macs_drops_the_fewest_blocks_that_meet_it(tiny_model_dir, synth_data):
    """--target-macs during a run: one block is not enough for the target, two are."""
    from pbd_deploy.compress.blocks import drop_block

    model = load_model(tiny_model_dir)
    total = count_macs(model.config)["total"]
    one_block = total - count_macs(drop_block(model, 0).config)["total"]
    target = (total - 1.5 * one_block) / total
    config = BlockDropConfig(target_macs=target, epochs=0, criterion="mse")
    small, report = progressive_block_drop(model, synth_data, config)
    left = count_macs(small.config)["total"]
    assert left <= target * total < left + one_block
    assert len(small.backbone.blocks) == 2 and len(report["iterations"]) == 2
    assert report["iterations"][-1]["macs"] == left


def test_one_shot_drops_the_budget_in_one_iteration(tiny_model_dir, synth_data):
    model = load_model(tiny_model_dir)
    config = BlockDropConfig(drop=2, epochs=0, schedule="one-shot", criterion="mse")
    small, report = progressive_block_drop(model, synth_data, config)
    assert len(report["iterations"]) == 1 and len(report["iterations"][0]["dropped"]) == 2
    assert len(small.backbone.blocks) == 2


def test_max_map_drop_stops_and_keeps_the_last_good_model(tiny_model_dir, synth_data, monkeypatch):
    # The val mAP each evaluation returns: baseline, then per iteration before and after.
    values = iter([0.50, 0.49, 0.30])
    monkeypatch.setattr(pbd._BlockDrop, "_val_map", lambda self, model: next(values))
    model = load_model(tiny_model_dir)
    config = BlockDropConfig(drop=3, epochs=0, max_map_drop=0.05, criterion="mse")
    small, report = progressive_block_drop(model, synth_data, config)
    assert len(small.backbone.blocks) == 3  # the second drop was undone
    assert [r["kept"] for r in report["iterations"]] == [True, False]
    assert "lost 20.00 val mAP points" in report["stopped"]
