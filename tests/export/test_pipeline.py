"""export_model / `pbd-deploy export`: the export directory, its figures, and bad inputs."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.core.annotations import ground_truth, load_annotations
from pbd_deploy.core.compare import assert_same_map, map_bounds, match_predictions
from pbd_deploy.core.metrics import load_predictions
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.evaluate import evaluate_path
from pbd_deploy.export import ExportConfig, export_model
from pbd_deploy.export.int8 import QUANTIZED_OPS
from pbd_deploy.runtime.artifact import file_sha256
from tests.export.helpers import deployed, tiny_model_dir


@pytest.fixture(scope="module")
def deploy(tmp_path_factory, synth_data):
    return deployed(tmp_path_factory, synth_data)


def test_manifest_records_the_contract(deploy):
    m = json.loads((deploy / "model.json").read_text())
    assert m["input"] == {"name": "frames", "shape": [1, 3, 32, 32, 32], "dtype": "float32"}
    assert [o["name"] for o in m["outputs"]] == ["scores", "segments"]
    assert m["opset"] == 17 and m["dynamic_axes"] == {}
    assert m["class_names"] == m["model_config"]["class_names"]
    for name, precision in (
        ("model.onnx", "fp32"),
        ("model.fp16.onnx", "fp16"),
        ("model.int8.onnx", "int8"),
    ):
        assert m["files"][name]["sha256"] == file_sha256(deploy / name)
        assert m["files"][name]["precision"] == precision
    assert (deploy / "build_engine.sh").is_file() and m["engine"]["built"] is False


def test_parity_figures_and_same_map(deploy, synth_data, tmp_path):
    m = json.loads((deploy / "model.json").read_text())
    p = m["parity"]
    assert p["detections_same"] is True
    for kind in ("random", "real"):
        assert p[kind]["scores"] <= 1e-4 and p[kind]["segments_per_stride"] <= 1e-4
    acc = m["accuracy"]
    assert abs(acc["map_diff_fp32"]) <= acc["map_diff_bound"]
    # `pbd-deploy eval deploy/model.onnx` scores the artifact like the model directory: the
    # same detections of the 3 test videos and the same mAP, as core.compare defines them
    # (ORT and torch differ by ~1e-7, so near-tied detections may swap).
    onnx_result = evaluate_path(
        deploy / "model.onnx", data=synth_data, save_predictions=tmp_path / "onnx.json"
    )
    torch_result = evaluate_path(
        deploy.parent / "model", data=synth_data, save_predictions=tmp_path / "torch.json"
    )
    onnx_preds, torch_preds = (load_predictions(tmp_path / f) for f in ("onnx.json", "torch.json"))
    assert len(onnx_preds) >= 3
    match = match_predictions(onnx_preds, torch_preds, max_detections=200)
    videos = load_annotations(synth_data / "annotations.json").split("test")
    assert_same_map(onnx_result, torch_result, match, ground_truth(videos))
    assert acc["map_diff_bound"] == pytest.approx(map_bounds(match, ground_truth(videos))[1])
    # The export measured the same file with the same code and ORT threads in this process.
    assert onnx_result.average_mAP == acc["onnx_fp32"]["average_mAP"]


def test_fp16_variant_keeps_fp32_io_and_is_measured(deploy, synth_data):
    model = onnx.load(str(deploy / "model.fp16.onnx"))
    io = [*model.graph.input, *model.graph.output]
    assert {v.type.tensor_type.elem_type for v in io} == {onnx.TensorProto.FLOAT}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    info = json.loads((deploy / "model.json").read_text())["fp16"]
    result = evaluate_path(deploy / "model.fp16.onnx", data=synth_data, split="test")
    assert info["mAP"]["average_mAP"] == result.average_mAP
    assert info["max_abs_diff_scores"] < 0.02


def test_int8_variant_is_qdq_around_gemm_and_conv_only(deploy):
    graph = onnx.load(str(deploy / "model.int8.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}
    users = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    quantized = set(QUANTIZED_OPS)
    gemms = [n for n in graph.node if n.op_type in quantized]
    # every GEMM / conv reads dequantized activations ...
    assert gemms and all(
        any(i in producer and producer[i].op_type == "DequantizeLinear" for i in n.input)
        for n in gemms
    )
    # ... and every Q -> DQ pair sits at the input or output of one (never on the mask or
    # the output probabilities).
    for q in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        src = producer.get(q.input[0])
        dq_users = [u for d in users[q.output[0]] for u in users.get(d.output[0], [])]
        assert (src is not None and src.op_type in quantized) or any(
            u.op_type in quantized for u in dq_users
        )
    info = json.loads((deploy / "model.json").read_text())["int8"]
    assert info["calibration_windows"] >= 1 and "mAP" in info


def test_calibration_windows_come_from_the_training_split(synth_data):
    from pbd_deploy.data.dataset import TadDataset
    from pbd_deploy.export.int8 import calibration_windows
    from tests.conftest import tiny_config

    ds = TadDataset(synth_data, tiny_config(classes=ds_classes(synth_data)))
    calib = ds.annotations.calibration_split()
    assert {v.video_id for v in calib} <= {v.video_id for v in ds.split("train")}
    windows = calibration_windows(ds, limit=100)
    expected = [x for v in calib for _, x, _ in ds.sliding_windows(v)]
    assert len(windows) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(windows, expected))


def ds_classes(data):
    from pbd_deploy.core.annotations import load_annotations

    return load_annotations(data / "annotations.json").class_names


def test_missing_calibration_data(tmp_path, synth_data):
    model_dir = tiny_model_dir(tmp_path / "m", synth_data)
    with pytest.raises(PbdError, match="--int8 needs calibration data"):
        ExportConfig(int8=True)
    with pytest.raises(PbdError, match="does not exist"):
        export_model(
            model_dir, tmp_path / "out", ExportConfig(int8=True, calib=str(tmp_path / "x"))
        )
    assert not (tmp_path / "out").exists()


def test_cli_errors_are_one_line(tmp_path, synth_data):
    runner = CliRunner()
    missing = runner.invoke(main, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    model_dir = tiny_model_dir(tmp_path / "m", synth_data)
    bad = runner.invoke(
        main, ["export", str(model_dir), "--out", str(tmp_path / "o"), "--window", "40"]
    )
    assert bad.exit_code == 2
    assert bad.output.count("\n") == 1 and "multiple of the 16-frame chunk" in bad.output
    assert not (tmp_path / "o").exists()


def test_cli_export_prints_the_figures(tmp_path, synth_data):
    model_dir = tiny_model_dir(tmp_path / "m", synth_data, seed=3)
    out = tmp_path / "d"
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(model_dir),
            "--out",
            str(out),
            "--dynamic",
            "--trt",
        ],
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "model.json").read_text())
    assert m["input"]["shape"] == ["batch", 3, "time", 32, 32]
    assert (
        f"random inputs: max abs diff scores {m['parity']['random']['scores']:.3g}" in result.output
    )
    assert "same detections after post-processing (core.compare): True" in result.output
    assert "TensorRT is not installed here" in result.output
