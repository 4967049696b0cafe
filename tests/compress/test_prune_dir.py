"""`pbd-deploy prune` on model directories: CLI, recovery, resume, either order with compress,
export of the result (ONNX parity, MatMul widths), bad inputs."""

import json
from collections import Counter

import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from torch import nn

from pbd_deploy.cli import main
from pbd_deploy.compress import pbd
from pbd_deploy.compress.channels import prune_model_dir
from pbd_deploy.compress.config import BlockDropConfig, ChannelPruneConfig
from pbd_deploy.compress.pbd import compress_model_dir
from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.errors import PbdError
from pbd_deploy.export import ExportConfig, export_model
from pbd_deploy.models.complexity import count_macs
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.info import model_info
from pbd_deploy.models.io import load_model, save_model
from pbd_deploy.models.registry import model_config
from tests.compress.test_channels import four_head_model

FAST = dict(epochs=0, calib_fraction=1.0, calib_windows=4)


@pytest.fixture(scope="module")
def four_heads_dir(synth_data, tmp_path_factory):
    classes = load_annotations(synth_data / "annotations.json").class_names
    return save_model(four_head_model(classes), tmp_path_factory.mktemp("m4") / "base")


def test_cli_prunes_recovers_and_records(tiny_model_dir, synth_data, tmp_path):
    out = tmp_path / "narrow"
    args = ["prune", str(tiny_model_dir), "--data", str(synth_data), "--out", str(out),
            "--heads", "1", "--mlp-ratio", "2", "--uniform", "--epochs", "1",
            "--calib-fraction", "1.0", "--calib-windows", "4"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "heads per block [1, 1, 1, 1], MLP units [64, 64, 64, 64]" in result.output
    config = json.loads((out / "config.json").read_text())
    assert (
        config["backbone"]["block_heads"] == [1] * 4 and config["backbone"]["mlp_dims"] == [64] * 4
    )
    entry = config["history"][-1]
    assert entry["stage"] == "prune" and entry["importance"] == "taylor"
    report = json.loads((out / "report.json").read_text())
    # recovery ran (one LoRA epoch, merged) and the best epoch on val was kept
    assert len(report["prune"]["epochs"]) == 1 and report["prune"]["merge_error"] < 1e-4
    best = max(
        [report["prune"]["val_mAP_before"]] + [e["val_mAP"] for e in report["prune"]["epochs"]]
    )
    assert report["prune"]["val_mAP"] == best
    info = model_info(out)
    assert info["block_heads"] == [1] * 4 and info["mlp_dims"] == [64] * 4
    assert info["macs"] == report["prune"]["macs"] < report["baseline"]["macs"]
    assert (out / "report.md").is_file() and not (tmp_path / "narrow.prune-state.pt").exists()


def test_resume_after_a_kill_gives_the_same_weights(
    four_heads_dir, synth_data, tmp_path, monkeypatch
):
    config = ChannelPruneConfig(target_macs=0.8, epochs=2, calib_fraction=1.0, calib_windows=4)
    reference = prune_model_dir(four_heads_dir, synth_data, tmp_path / "ref", config)
    original = pbd.Recovery._epoch

    def killed_in_epoch_2(self, student, trainer, pending, epoch, epochs):
        if epoch == 2:
            raise KeyboardInterrupt
        original(self, student, trainer, pending, epoch, epochs)

    monkeypatch.setattr(pbd.Recovery, "_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        prune_model_dir(four_heads_dir, synth_data, tmp_path / "out", config)
    monkeypatch.undo()
    other = ChannelPruneConfig(**{**config.to_dict(), "importance": "magnitude"})
    with pytest.raises(PbdError, match="other options"):
        prune_model_dir(four_heads_dir, synth_data, tmp_path / "out", other, resume=True)
    resumed = prune_model_dir(four_heads_dir, synth_data, tmp_path / "out", config, resume=True)
    assert resumed["prune"]["kept_heads"] == reference["prune"]["kept_heads"]
    a, b = load_model(tmp_path / "ref"), load_model(tmp_path / "out")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_compress_then_prune_then_export(four_heads_dir, synth_data, tmp_path):
    small = tmp_path / "small"
    compress_model_dir(
        four_heads_dir, synth_data, small, BlockDropConfig(drop_indices=[1], epochs=0)
    )
    narrow = tmp_path / "narrow"
    prune_model_dir(small, synth_data, narrow, ChannelPruneConfig(target_macs=0.7, **FAST))
    model = load_model(narrow)
    bb = model.config.backbone
    assert bb.block_indices == [0, 2, 3] and len(bb.block_heads) == len(bb.mlp_dims) == 3
    assert count_macs(model.config)["total"] <= 0.7 * count_macs(load_model(small).config)["total"]
    manifest = export_model(narrow, tmp_path / "deploy", ExportConfig())
    p = manifest["parity"]
    assert p["random"]["scores"] <= 1e-4 and p["random"]["segments_per_stride"] <= 1e-4
    # every block's four GEMMs (MatMul, or Gemm after onnxslim) have the recorded widths
    shapes = gemm_weight_shapes(tmp_path / "deploy" / "model.onnx")
    c, d = bb.dim, bb.head_dim
    expected = Counter()
    for heads, hidden in zip(bb.block_heads, bb.mlp_dims):
        expected.update([(c, 3 * heads * d), (heads * d, c), (c, hidden), (hidden, c)])
    head = Counter(
        (m.in_features, m.out_features) for m in model.head.modules() if isinstance(m, nn.Linear)
    )
    assert shapes == expected + head


def gemm_weight_shapes(path) -> Counter:
    """(in, out) of every constant weight multiplied by a MatMul or Gemm of the graph."""
    graph = onnx.load(path).graph
    weights = {t.name: numpy_helper.to_array(t).shape for t in graph.initializer}
    shapes = Counter()
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            shape = weights[node.input[1]]
            trans = any(a.name == "transB" and a.i for a in node.attribute)
            shapes[tuple(reversed(shape)) if trans else tuple(shape)] += 1
    return shapes


def test_prune_then_compress(four_heads_dir, synth_data, tmp_path):
    narrow = tmp_path / "narrow"
    prune_model_dir(four_heads_dir, synth_data, narrow, ChannelPruneConfig(heads=2, **FAST))
    heads = load_model(narrow).config.backbone.block_heads
    small = tmp_path / "small"
    compress_model_dir(narrow, synth_data, small, BlockDropConfig(drop_indices=[2], epochs=0))
    model = load_model(small)
    bb = model.config.backbone
    assert bb.block_indices == [0, 1, 3] and bb.block_heads == heads[:2] + heads[3:]
    assert [b.attn.heads for b in model.backbone.blocks] == bb.block_heads
    assert [s["stage"] for s in model.config.history][-2:] == ["prune", "compress"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-macs", "0.05"], "would remove every"),
        (["--heads", "3", "--uniform"], "has only 2"),
        (["--mlp-ratio", "2.01"], "not a whole number"),
        (["--heads", "1", "--importance", "l1"], "unknown --importance"),
        (["--heads", "1", "--target-macs", "0.5"], "not both"),
    ],
)
def test_cli_bad_inputs_are_one_line(tiny_model_dir, synth_data, tmp_path, args, message):
    out = tmp_path / "out"
    base = ["prune", str(tiny_model_dir), "--data", str(synth_data), "--out", str(out)]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_cli_refuses_a_feature_mode_model(synth_data, tmp_path):
    classes = load_annotations(synth_data / "annotations.json").class_names
    features = save_model(Detector(model_config("features", classes)), tmp_path / "f")
    args = [
        "prune",
        str(features),
        "--data",
        str(synth_data),
        "--out",
        str(tmp_path / "o"),
        "--heads",
        "1",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "feature-mode models have no blocks" in result.output
    assert not (tmp_path / "o").exists()
