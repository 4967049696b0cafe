"""A converted AdaTAD checkpoint goes through block drop, export and the ONNX runtime.

convert (OpenTAD fixture, adapters in blocks 1 and 3) -> compress --drop-indices 1
--epochs 0 -> export -> eval model.onnx, and the ONNX outputs equal torch's within 1e-4.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pbd_deploy.compress.config import BlockDropConfig
from pbd_deploy.compress.pbd import compress_model_dir
from pbd_deploy.eval.evaluate import evaluate_path
from pbd_deploy.export.config import ExportConfig
from pbd_deploy.export.pipeline import export_model
from pbd_deploy.models.convert import ConvertConfig, convert_model_dir
from pbd_deploy.models.io import load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "opentad"


@pytest.mark.slow
def test_converted_adatad_drops_a_block_with_its_adapter_and_exports(synth_data, tmp_path):
    meta = json.loads((FIXTURES / "adatad_global.json").read_text())
    config_file = tmp_path / "adatad_tiny.py"  # the fixture's model, our synthetic frames
    config_file.write_text(
        f"window_size = 64\nmodel = {meta['model']!r}\n"
        "dataset = dict(test=dict(window_overlap_ratio=0.5, pipeline=[\n"
        "    dict(type='mmaction.Resize', scale=(-1, 32)),\n"
        "    dict(type='mmaction.CenterCrop', crop_size=32)]))\n"
    )
    classes = json.loads((Path(synth_data) / "annotations.json").read_text())
    names = sorted({a["label"] for v in classes["database"].values() for a in v["annotations"]})
    convert_model_dir(
        FIXTURES / "adatad_global.pth", tmp_path / "conv", names,
        ConvertConfig(opentad_config=str(config_file)),
    )  # fmt: skip
    converted = load_model(tmp_path / "conv")
    assert converted.config.input.stride == 32 and converted.config.input.crop == 32
    assert [b.adapter is not None for b in converted.backbone.blocks] == [False, True, False, True]

    compress_model_dir(
        tmp_path / "conv", synth_data, tmp_path / "small",
        BlockDropConfig(drop_indices=[1], epochs=0),
    )  # fmt: skip
    small = load_model(tmp_path / "small")
    assert small.config.backbone.block_indices == [0, 2, 3]
    # block 1 took its adapter with it; block 3 kept its own, with the same weights
    assert [b.adapter is not None for b in small.backbone.blocks] == [False, False, True]
    torch.testing.assert_close(
        small.backbone.blocks[2].adapter.dwconv.weight,
        converted.backbone.blocks[3].adapter.dwconv.weight,
    )

    manifest = export_model(tmp_path / "small", tmp_path / "deploy", ExportConfig())
    assert manifest["parity"]["max_abs_diff"] <= 1e-4

    import onnxruntime as ort  # ORT on a real-looking window, independently of the exporter

    session = ort.InferenceSession(str(tmp_path / "deploy" / "model.onnx"))
    x = torch.randn(1, 3, 64, 32, 32, generator=torch.Generator().manual_seed(0))
    valid = torch.tensor([40])  # converted: OpenTAD's padding mask, a window of 40 real points
    assert [i.name for i in session.get_inputs()] == ["frames", "valid"]
    with torch.no_grad():
        probs, segments = small.predict(x, valid)
    outputs = session.run(None, {"frames": x.numpy(), "valid": valid.numpy()})
    by_name = dict(zip([o.name for o in session.get_outputs()], outputs))
    assert np.abs(by_name["scores"] - probs.numpy()).max() <= 1e-4
    assert np.abs(by_name["segments"] - segments.numpy()).max() <= 1e-4

    onnx_result = evaluate_path(tmp_path / "deploy" / "model.onnx", data=synth_data, split="test")
    torch_result = evaluate_path(tmp_path / "small", data=synth_data, split="test")
    assert abs(onnx_result.average_mAP - torch_result.average_mAP) <= 1e-6


def test_recovery_trains_adatad_adapters_beside_lora():
    from pbd_deploy.compress.lora import inject_adapters
    from pbd_deploy.models.detector import Detector
    from tests.conftest import tiny_config

    config = tiny_config()
    config.backbone.adapter_indices, config.backbone.adapter_frames = [1, 3], 32
    model = Detector(config)
    inject_adapters(model, ["attn.qkv"], rank=4, alpha=None)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "backbone.blocks.1.adapter.dwconv.weight" in trainable
    assert "backbone.blocks.3.adapter.up_proj.weight" in trainable
    assert not any(n.endswith("blocks.1.mlp.fc1.weight") for n in trainable)  # ViT stays frozen
