"""A converted class-agnostic (1-class) ActivityNet-style OpenTAD model on data with many
classes: convert -> compress (block scoring, recovery, validation) -> export -> eval, scored
class-agnostically without a video classifier and per class with one (--video-scores)."""

import copy
import json
import shutil

import pytest
import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.core.metrics import ACTIVITYNET_THRESHOLDS, evaluate_detections
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.evaluate import evaluate_path
from pbd_deploy.models.convert import ConvertConfig, convert_checkpoint
from pbd_deploy.models.io import load_model
from tests.models.test_opentad_resize_input import FIXTURES, META
from tests.test_cli import assert_one_line_error, run

LABELS = [f"activity{i}" for i in range(7)]


def anet_config(folder, num_classes: int = 1) -> str:
    """The adatad_abs_pe fixture's model as an ActivityNet-style AdaTAD config: resize input,
    class-agnostic datasets, class-agnostic Soft-NMS with voting, the CUHK classifier, the
    ActivityNet tIoUs (configs/adatad/anet/*_adapter.py at the fixture's size)."""
    model = copy.deepcopy(META["model"])
    model["rpn_head"]["num_classes"] = num_classes
    test = dict(type="AnetResizeDataset", resize_length=64, class_agnostic=True, pipeline=[
        dict(type="LoadFrames", num_clips=1, method="resize", scale_factor=1),
        dict(type="mmaction.Resize", scale=(-1, 32)),
        dict(type="mmaction.CenterCrop", crop_size=32),
    ])  # fmt: skip
    post = dict(
        nms=dict(use_soft_nms=True, sigma=0.7, max_seg_num=100, min_score=0.001,
                 multiclass=False, voting_thresh=0.9),
        external_cls=dict(type="CUHKANETClassifier", path="cuhk.json", topk=2),
    )  # fmt: skip
    path = folder / "anet_class_agnostic.py"
    path.write_text(
        f"model = {model!r}\ndataset = {dict(train=dict(class_agnostic=True), test=test)!r}\n"
        f"post_processing = {post!r}\nevaluation = {dict(tiou_thresholds=list(ACTIVITYNET_THRESHOLDS))!r}\n"
    )  # fmt: skip
    return str(path)


def one_class_checkpoint(path):
    """adatad_abs_pe with a 1-class classification layer (its first class's weights)."""
    ckpt = torch.load(FIXTURES / "adatad_abs_pe.pth", weights_only=True)
    for state in (ckpt["state_dict"], ckpt["state_dict_ema"]):
        for key in ("module.rpn_head.cls_head.weight", "module.rpn_head.cls_head.bias"):
            state[key] = state[key][:1].clone()
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def many_classes(synth_data, tmp_path_factory):
    """The synthetic videos, annotated with 7 labels; one test segment is annotated twice,
    under two labels (one instance class-agnostically)."""
    root = tmp_path_factory.mktemp("many") / "data"
    root.mkdir()
    (root / "videos").symlink_to(synth_data / "videos")
    ann = json.loads((synth_data / "annotations.json").read_text())
    n = 0
    for video in ann["database"].values():
        for a in video["annotations"]:
            a["label"], n = LABELS[n % len(LABELS)], n + 1
    test = [v for v in ann["database"].values() if v["subset"] == "testing"][0]
    test["annotations"].append({**test["annotations"][0], "label": "activity6x"})
    (root / "annotations.json").write_text(json.dumps(ann))
    return root


@pytest.fixture(scope="module")
def converted(many_classes, tmp_path_factory):
    root = tmp_path_factory.mktemp("class_agnostic")
    ckpt = one_class_checkpoint(root / "anet.pth")
    result = run("convert", ckpt, "--opentad-config", anet_config(root), "--num-classes", "1",
                 "--out", root / "model")  # fmt: skip
    assert result.exit_code == 0, result.output
    return root


def independent_truth(data, label=None):
    """Test-split ground truth straight from the file; with `label`, every segment once."""
    videos = load_annotations(data / "annotations.json").split("test")
    raw = json.loads((data / "annotations.json").read_text())["database"]
    truth = {}
    for v in videos:
        segments = [(a["label"], tuple(a["segment"])) for a in raw[v.video_id]["annotations"]]
        if label:
            segments = [(label, s) for s in sorted({s for _, s in segments})]
        truth[v.video_id] = [{"label": name, "segment": list(s)} for name, s in segments]
    return truth


def test_convert_marks_the_model_class_agnostic(converted):
    model = load_model(converted / "model")
    assert model.config.class_agnostic and model.config.class_names == ["class0"]
    assert model.config.truth_label == "class0" and model.config.post.video_topk == 2


def test_compress_export_and_eval_class_agnostically(converted, many_classes, tmp_path):
    small, deploy = tmp_path / "small", tmp_path / "deploy"
    result = run("compress", converted / "model", "--data", many_classes, "--out", small,
                 "--drop-indices", "1", "--epochs", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    model = load_model(small)
    assert model.config.class_agnostic and model.config.backbone.block_indices == [0, 2, 3]
    report = json.loads((small / "report.json").read_text())
    # validation was scored class-agnostically: the baseline's val mAP is eval's
    baseline = evaluate_path(converted / "model", data=many_classes, split="val")
    assert report["baseline"]["val_mAP"] == baseline.average_mAP > 0
    assert len(report["iterations"][0]["epochs"]) == 1

    result = run("export", small, "--out", deploy)
    assert result.exit_code == 0, result.output
    assert json.loads((deploy / "model.json").read_text())["model_config"]["class_agnostic"]
    for target in (small, deploy / "model.onnx"):
        saved = tmp_path / f"{target.name}.preds.json"
        got = evaluate_path(target, data=many_classes, save_predictions=saved)
        predictions = json.loads(saved.read_text())["results"]
        assert {d["label"] for found in predictions.values() for d in found} == {"class0"}
        expected = evaluate_detections(
            independent_truth(many_classes, "class0"), predictions, ACTIVITYNET_THRESHOLDS
        )
        assert got.thresholds == ACTIVITYNET_THRESHOLDS and list(got.per_class) == ["class0"]
        assert got.mAP.tolist() == expected.mAP.tolist() and got.average_mAP > 0
    # a predictions file: --class-agnostic gives the same figures
    args = ["eval", tmp_path / "small.preds.json", "--annotations",
            many_classes / "annotations.json", "--thresholds", "activitynet", "--json"]  # fmt: skip
    out = run(*args, "--class-agnostic")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["mAP"] == evaluate_path(small, data=many_classes).mAP.tolist()
    assert_one_line_error(run(*args), "class0")  # a label the annotations do not have


def test_eval_with_video_scores_keeps_the_annotated_classes(converted, many_classes, tmp_path):
    """Fused detections carry the classifier's classes: ground truth keeps its labels."""
    classes = load_annotations(many_classes / "annotations.json").class_names
    assert len(classes) == 8
    videos = load_annotations(many_classes / "annotations.json").split("test")
    rows = {v.video_id: [0.01 * ((i + 3 * j) % 11) for i in range(len(classes))]
            for j, v in enumerate(videos)}  # fmt: skip
    scores = tmp_path / "cuhk.json"
    scores.write_text(json.dumps({"class": classes, "results": rows}))
    saved = tmp_path / "fused.json"
    got = evaluate_path(converted / "model", data=many_classes, video_scores=scores,
                        save_predictions=saved)  # fmt: skip
    predictions = json.loads(saved.read_text())["results"]
    labels = {d["label"] for found in predictions.values() for d in found}
    assert labels <= set(classes) and len(labels) > 2  # the top 2 of each video
    truth = independent_truth(many_classes)
    expected = evaluate_detections(truth, predictions, ACTIVITYNET_THRESHOLDS)
    assert got.mAP.tolist() == expected.mAP.tolist()
    annotated = {d["label"] for found in truth.values() for d in found}
    assert set(got.per_class) == annotated and len(annotated) > 2


def test_one_line_errors(converted, many_classes, tmp_path):
    config = ConvertConfig(opentad_config=anet_config(tmp_path, num_classes=3))
    with pytest.raises(PbdError, match="class-agnostically.*detects 3 classes"):
        convert_checkpoint(FIXTURES / "adatad_abs_pe.pth", META["classes"], config)
    result = run("eval", converted / "model", "--data", many_classes, "--class-agnostic")
    assert_one_line_error(result, "--class-agnostic scores a predictions file")
    edited = tmp_path / "edited"
    shutil.copytree(converted / "model", edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "class_names": ["a", "b"]}))
    result = run("eval", edited, "--data", many_classes)
    assert_one_line_error(result, "a class-agnostic detector has exactly one class")


def test_block_scores_are_class_agnostic_mAPs(converted, many_classes):
    """compress's block scoring: each candidate's score is the class-agnostic val mAP that
    eval gives the model without that block."""
    from pbd_deploy.compress.blocks import drop_block
    from pbd_deploy.compress.importance import score_candidates
    from pbd_deploy.data.dataset import TadDataset
    from pbd_deploy.eval.inference import evaluate_model

    model = load_model(converted / "model")
    ds = TadDataset(many_classes, model.config)
    scores = score_candidates(model, ds, ds.split("val"), "map")
    assert sorted(scores) == [0, 1, 2, 3] and max(scores.values()) > 0
    for block, score in scores.items():
        result, _ = evaluate_model(drop_block(model, block), ds, "val")
        assert score == pytest.approx(result.average_mAP, abs=1e-6)


def test_presets_say_which_models_are_class_agnostic():
    """Every ActivityNet preset (AdaTAD's configs: class_agnostic=True), no THUMOS14 one."""
    from pbd_deploy.models.opentad_arch import _class_agnostic
    from pbd_deploy.models.opentad_config import opentad_preset, preset_names

    agnostic = {name: _class_agnostic(opentad_preset(name)) for name in preset_names()}
    assert any(agnostic.values()) and not all(agnostic.values())
    assert all(value == ("-anet-" in name) for name, value in agnostic.items()), agnostic
