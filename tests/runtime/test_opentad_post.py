"""A converted OpenTAD model is evaluated and deployed with OpenTAD's post-processing and its
config's tIoU thresholds everywhere: torch eval, the exported ONNX in the runtime, the
TensorRT backend (host decode), compress's block scoring; ActivityNet's classifier fusion
equals OpenTAD's own output (tests/fixtures/opentad/fusion.json, make_fusion_fixture.py)."""

import json
import sys

import numpy as np
import pytest
import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.core.compare import assert_same_detections, match_predictions, rows_from_arrays
from pbd_deploy.core.metrics import ACTIVITYNET_THRESHOLDS, THUMOS_THRESHOLDS
from pbd_deploy.core.opentad_post import OpenTADPostConfig, VideoScores
from pbd_deploy.core.postprocess import PostprocessConfig
from pbd_deploy.core.postprocessors import (
    postprocess_from_dict,
    postprocess_to_dict,
    video_detections,
    window_candidates,
)
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.evaluate import evaluate_path
from pbd_deploy.export import ExportConfig, export_model
from pbd_deploy.models.convert import ConvertConfig, convert_model_dir
from pbd_deploy.models.detector import DetectorConfig
from pbd_deploy.models.io import load_model
from pbd_deploy.runtime import Detector as Runtime
from tests.conftest import tiny_config
from tests.export.helpers import runtime_and_torch
from tests.models.test_opentad_fixtures import FIXTURES

FUSION = json.loads((FIXTURES / "fusion.json").read_text())


def opentad_config(folder, name: str = "adatad_global", **sections) -> str:
    """The fixture's OpenTAD model as a config file, with a 32-pixel test pipeline, windows
    overlapping by half, and the given top-level sections (post_processing, evaluation)."""
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    dataset = dict(test=dict(window_overlap_ratio=0.5, pipeline=[
        dict(type="mmaction.Resize", scale=(-1, 32)),
        dict(type="mmaction.CenterCrop", crop_size=32),
    ]))  # fmt: skip
    text = f"window_size = 64\nmodel = {meta['model']!r}\ndataset = {dataset!r}\n"
    text += "".join(f"{key} = {value!r}\n" for key, value in sections.items())
    path = folder / f"{name}_config.py"
    path.write_text(text)
    return str(path)


THUMOS_POST = dict(
    nms=dict(use_soft_nms=True, sigma=0.7, max_seg_num=2000, multiclass=True, voting_thresh=0.7)
)
ANET_EVAL = dict(tiou_thresholds=list(ACTIVITYNET_THRESHOLDS))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, synth_data):
    """adatad_global converted with an OpenTAD config (THUMOS post-processing, ActivityNet
    thresholds) for the synthetic classes, and exported (ONNX parity on the test split)."""
    root = tmp_path_factory.mktemp("opentad_post")
    classes = load_annotations(synth_data / "annotations.json").class_names
    config = ConvertConfig(
        opentad_config=opentad_config(root, post_processing=THUMOS_POST, evaluation=ANET_EVAL)
    )
    convert_model_dir(FIXTURES / "adatad_global.pth", root / "model", classes, config)
    export_model(root / "model", root / "deploy", ExportConfig(data=str(synth_data)), force=True)
    return root


def test_convert_takes_post_processing_and_thresholds_from_the_config(converted):
    model = load_model(converted / "model")
    post = model.config.post
    assert post == OpenTADPostConfig(sigma=0.7, max_seg_num=2000, voting_thresh=0.7)
    assert model.config.thresholds == ACTIVITYNET_THRESHOLDS
    manifest = json.loads((converted / "deploy" / "model.json").read_text())
    assert postprocess_from_dict(manifest["postprocess"]) == post
    assert manifest["postprocess"]["method"] == "opentad"
    assert tuple(manifest["thresholds"]) == ACTIVITYNET_THRESHOLDS
    runtime = Runtime(converted / "deploy" / "model.onnx")
    assert runtime.postprocess == post and runtime.thresholds == ACTIVITYNET_THRESHOLDS


def test_anet_config_sections_and_their_absence(tmp_path, synth_data):
    """ActivityNet's post_processing (class-agnostic, voting, CUHK top-2) and tIoUs; without
    the sections (OpenTAD's base model config has neither) ours and THUMOS14's stay."""
    from pbd_deploy.models.convert import convert_checkpoint

    classes = json.loads((FIXTURES / "adatad_global.json").read_text())["classes"]
    anet = dict(
        nms=dict(use_soft_nms=True, sigma=0.7, max_seg_num=100, min_score=0.001,
                 multiclass=False, voting_thresh=0.9),
        external_cls=dict(type="CUHKANETClassifier", path="cuhk.json", topk=2),
    )  # fmt: skip
    path = opentad_config(tmp_path, post_processing=anet, evaluation=ANET_EVAL)
    model, _ = convert_checkpoint(
        FIXTURES / "adatad_global.pth", classes, ConvertConfig(opentad_config=path)
    )
    assert model.config.post == OpenTADPostConfig(
        sigma=0.7, max_seg_num=100, min_score=0.001, multiclass=False, voting_thresh=0.9,
        video_topk=2,
    )  # fmt: skip
    assert model.config.thresholds == ACTIVITYNET_THRESHOLDS
    plain, _ = convert_checkpoint(
        FIXTURES / "adatad_global.pth",
        classes,
        ConvertConfig(opentad_config=opentad_config(tmp_path)),
    )
    assert plain.config.post == PostprocessConfig() and plain.config.thresholds == THUMOS_THRESHOLDS
    anet["external_cls"]["type"] = "StandardClassifier"
    path = opentad_config(tmp_path, post_processing=anet)
    with pytest.raises(PbdError, match="StandardClassifier"):
        convert_checkpoint(
            FIXTURES / "adatad_global.pth", classes, ConvertConfig(opentad_config=path)
        )


def test_onnx_runtime_equals_torch_eval_with_opentad_post(converted, synth_data):
    _, theirs, ds, match = runtime_and_torch(converted, synth_data)
    for video in ds.split("test"):
        assert len(list(ds.sliding_windows(video))) >= 2  # the cross-window Soft-NMS runs
        segs = np.array([d["segment"] for d in theirs[video.video_id]])
        assert len(segs) > 10 and np.allclose(segs * 100, np.round(segs * 100))  # OpenTAD rounds
    assert match.same, match.problems[:5]


def test_eval_defaults_to_the_models_thresholds(converted, synth_data):
    for target in (converted / "model", converted / "deploy" / "model.onnx"):
        assert evaluate_path(target, data=synth_data).thresholds == ACTIVITYNET_THRESHOLDS
        assert evaluate_path(target, data=synth_data, thresholds="thumos").thresholds == (
            THUMOS_THRESHOLDS
        )


def test_eval_cli_reports_ten_tious_without_thresholds(converted, synth_data):
    from click.testing import CliRunner

    from pbd_deploy.cli import main

    args = ["eval", str(converted / "deploy" / "model.onnx"), "--data", str(synth_data), "--json"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["thresholds"] == list(ACTIVITYNET_THRESHOLDS)


def test_compress_scores_blocks_with_the_models_post_and_thresholds(converted, synth_data,
                                                                    monkeypatch):  # fmt: skip
    import pbd_deploy.compress.importance as importance

    model = load_model(converted / "model")
    ds = TadDataset(synth_data, model.config)
    seen, posts = [], []
    real_eval, real_merge = importance.evaluate_detections, importance.merge_windows
    monkeypatch.setattr(importance, "evaluate_detections",
                        lambda gt, p, t: seen.append(tuple(t)) or real_eval(gt, p, t))  # fmt: skip
    monkeypatch.setattr(importance, "merge_windows",
                        lambda parts, post, names: posts.append(post) or real_merge(parts, post, names))  # fmt: skip
    scores = importance.score_candidates(model, ds, ds.split("val"), "map")
    assert len(scores) == 4 and seen == [ACTIVITYNET_THRESHOLDS] * 4
    assert posts and all(p == model.config.post for p in posts)


def test_old_config_and_manifest_load_as_pbd_and_thumos(tiny_model, tmp_path):
    """Files written before the fields existed: ours and THUMOS14's."""
    data = tiny_model.config.to_dict()
    del data["postprocess"], data["thresholds"]
    old = DetectorConfig.from_dict(json.loads(json.dumps(data)))
    assert old.post == PostprocessConfig() and old.thresholds == THUMOS_THRESHOLDS
    old_block = PostprocessConfig(sigma=0.4).to_dict()  # model.json's block had no "method"
    assert postprocess_from_dict(old_block) == PostprocessConfig(sigma=0.4)
    assert postprocess_from_dict(None) == PostprocessConfig()
    with pytest.raises(PbdError, match="method 'nms9' in model.json"):
        postprocess_from_dict({"method": "nms9"}, "model.json")
    with pytest.raises(PbdError, match="thresholds"):
        DetectorConfig.from_dict({**data, "thresholds": [0.5, 1.5]})


def test_old_manifest_runs_with_pbd_and_thumos(tmp_path, synth_data):
    """An export whose model.json predates the fields: the runtime applies ours + THUMOS14."""
    from pbd_deploy.models.detector import Detector
    from pbd_deploy.models.io import save_model

    torch.manual_seed(0)
    classes = load_annotations(synth_data / "annotations.json").class_names
    save_model(Detector(tiny_config(classes=classes)).eval(), tmp_path / "model")
    export_model(tmp_path / "model", tmp_path / "deploy", ExportConfig(), force=True)
    manifest_path = tmp_path / "deploy" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["postprocess"].pop("method")
    del manifest["thresholds"], manifest["model_config"]["postprocess"]
    del manifest["model_config"]["thresholds"]
    manifest_path.write_text(json.dumps(manifest))
    runtime = Runtime(tmp_path / "deploy" / "model.onnx")
    assert runtime.postprocess == PostprocessConfig() and runtime.thresholds == THUMOS_THRESHOLDS
    result = evaluate_path(tmp_path / "deploy" / "model.onnx", data=synth_data)
    assert result.thresholds == THUMOS_THRESHOLDS


# --- ActivityNet's external classifier -------------------------------------------------------


def fusion_detections(video_scores: VideoScores, index: int):
    """Our post-processing of fusion.json's video `index`, as the runtime runs a resized video."""
    meta, x = FUSION["metas"][index], FUSION["inputs"][index]
    post = OpenTADPostConfig(
        **{k: v for k, v in FUSION["nms"].items() if k != "use_soft_nms"},
        sliding_window=False,
        video_topk=FUSION["topk"],
    )
    length, duration = FUSION["length"], meta["duration"]
    # the resized video's map (core.windows.points_to_seconds, sampling "resize")
    to_sec = lambda p: np.float32(p) / np.float32(length) * np.float32(duration)  # noqa: E731
    part = window_candidates(
        post, np.array(x["scores"]), np.array(x["proposals"]), np.arange(length, dtype=np.float32),
        x["valid"], to_sec, duration, video_scores.of(meta["video_name"]),
    )  # fmt: skip
    return video_detections(post, [part])


@pytest.mark.parametrize("index", [0, 1])
def test_video_classifier_fusion_equals_opentads(index):
    scores = VideoScores.load(FIXTURES / "fusion_classifier.json")
    segs, scs, labels = fusion_detections(scores, index)
    expected = FUSION["results"][FUSION["metas"][index]["video_name"]]
    assert len(scs) == len(expected) > 0
    names = scores.class_names
    assert {names[k] for k in labels} == {d["label"] for d in expected}  # only the top 2
    match = assert_same_detections(
        rows_from_arrays(segs, scs, labels),
        rows_from_arrays(
            np.array([d["segment"] for d in expected]),
            np.array([d["score"] for d in expected]),
            np.array([names.index(d["label"]) for d in expected]),
        ),
        score_tol=1e-9,  # the same inputs and float32 steps: the same rounded values
        segment_tol=1e-9,
        segment_rtol=0.0,
    )
    assert len(match.pairs) == len(scs)


def test_video_scores_errors_are_one_line(tmp_path):
    with pytest.raises(PbdError, match="does not exist"):
        VideoScores.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {}}))
    with pytest.raises(PbdError, match="needs 'class'"):
        VideoScores.load(bad)
    bad.write_text(json.dumps({"class": ["a", "b"], "results": {"v1": [0.5]}}))
    scores = VideoScores.load(bad)
    with pytest.raises(PbdError, match="'v1' has 1 class scores, but the file names 2"):
        scores.of("v1")
    with pytest.raises(PbdError, match="'v2' has no scores"):
        scores.of("v2")
    with pytest.raises(PbdError, match="1-class"):
        scores.check_detector(3)
    with pytest.raises(PbdError, match="fused by OpenTAD's post-processing"):
        window_candidates(PostprocessConfig(), np.zeros((4, 1)), np.zeros((4, 2)),
                          np.arange(4.0), 4, lambda p: p, 1.0, np.ones(2))  # fmt: skip


def test_eval_and_infer_refuse_video_scores_before_work(converted, synth_data, tmp_path):
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"class": ["x"], "results": {}}))
    onnx = converted / "deploy" / "model.onnx"
    with pytest.raises(PbdError, match="1-class"):  # the converted model has 3 classes
        evaluate_path(onnx, data=synth_data, video_scores=scores)
    with pytest.raises(PbdError, match="does not exist"):
        evaluate_path(onnx, data=synth_data, video_scores=tmp_path / "none.json")


def test_runtime_fuses_a_one_class_models_detections(tmp_path, synth_data):
    """A 1-class model with OpenTAD post-processing: the runtime's fused detections are the
    torch eval path's, labelled with the classifier's classes."""
    from pbd_deploy.models.detector import Detector
    from pbd_deploy.models.io import save_model

    torch.manual_seed(1)
    config = tiny_config(classes=("action",))
    config.postprocess = postprocess_to_dict(OpenTADPostConfig())
    save_model(Detector(DetectorConfig.from_dict(config.to_dict())).eval(), tmp_path / "model")
    export_model(tmp_path / "model", tmp_path / "deploy", ExportConfig(), force=True)
    videos = load_annotations(synth_data / "annotations.json").split("test")
    classes = load_annotations(synth_data / "annotations.json").class_names
    rng = np.random.default_rng(0)
    file = tmp_path / "cuhk.json"
    file.write_text(json.dumps({"class": classes, "results": {
        v.video_id: rng.random(len(classes)).round(4).tolist() for v in videos
    }}))  # fmt: skip
    runtime = Runtime(tmp_path / "deploy" / "model.onnx", video_scores=file)
    model = load_model(tmp_path / "model")
    ds = TadDataset(synth_data, model.config.__class__.from_dict(
        {**model.config.to_dict(), "class_names": classes}))  # fmt: skip
    scores = VideoScores.load(file)
    from pbd_deploy.data.loader import eval_batches
    from pbd_deploy.eval.inference import predict_batches

    theirs = dict(predict_batches(model, ds, eval_batches(ds, videos, 8), video_scores=scores))
    ours = {}
    for video in videos:
        path = synth_data / "videos" / f"{video.video_id}.mp4"
        found = runtime.detect(path, duration=video.duration)
        ours[video.video_id] = [d.to_dict() for d in found]
        top2 = np.argsort(-np.array(scores.results[video.video_id]), kind="stable")[:2]
        assert {d.label for d in found} == {classes[k] for k in top2}
    match = match_predictions(ours, theirs, max_detections=runtime.postprocess.max_detections)
    assert match.same, match.problems[:5]
    result = evaluate_path(tmp_path / "deploy" / "model.onnx", data=synth_data, video_scores=file)
    torch_result = evaluate_path(tmp_path / "model", data=synth_data, video_scores=file)
    assert result.average_mAP == pytest.approx(torch_result.average_mAP, abs=1e-6)


# --- TensorRT: the CUDA decode kernel implements ours only --------------------------------------


def test_tensorrt_runtime_with_opentad_post_decodes_on_the_host(
    tmp_path_factory, synth_data, tmp_path, monkeypatch
):
    import pbd_deploy.runtime.kernels as kernels
    import pbd_deploy.runtime.trt_backend as trt_backend
    from pbd_deploy.runtime.engine_meta import DeviceInfo
    from tests.export.fake_trt import Cuda, fake_trt
    from tests.export.helpers import fake_dynamic_engine
    from tests.runtime.test_kernels import _EmulatedLauncher

    trt = fake_trt("10.3.0")
    h100 = DeviceInfo("10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), 132)
    engine = fake_dynamic_engine(tmp_path_factory, synth_data, tmp_path, trt, h100)
    manifest_path = engine.parent / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["postprocess"] = postprocess_to_dict(OpenTADPostConfig())
    manifest_path.write_text(json.dumps(manifest))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "open_cuda", Cuda)
    launched = []

    class Recording(_EmulatedLauncher):
        def launch(self, name, grid, block, args):
            launched.append(name)
            super().launch(name, grid, block, args)

    monkeypatch.setattr(kernels, "_Launcher", Recording)
    monkeypatch.setattr(kernels, "compile_ptx", lambda name, arch: b"")
    frames = np.random.default_rng(0).integers(0, 256, (75, 32, 40, 3), np.uint8)  # 3 windows

    def detections(kernels_on: str):
        monkeypatch.setenv("PBD_CUDA_KERNELS", kernels_on)
        detector = Runtime(engine)
        assert (detector.backend.kernels is not None) == (kernels_on == "1")
        assert isinstance(detector.postprocess, OpenTADPostConfig)
        return detector.detect(frames, fps=10.0, batch_size=2)

    with_kernels, numpy_path = detections("1"), detections("0")
    assert "decode_topk" not in launched
    assert len(numpy_path) > 10 and with_kernels == numpy_path
    segs = np.array([[d.start_s, d.end_s] for d in numpy_path])
    assert np.allclose(segs * 100, np.round(segs * 100))  # OpenTAD's rounding: its path ran


def test_presets_give_the_published_post_processing_and_thresholds(tmp_path):
    """AdaTAD's THUMOS14 and ActivityNet configs (their numbers written out here)."""
    from pbd_deploy.models.convert import convert_checkpoint
    from tests.models.test_opentad_presets import real_size_checkpoint

    ckpt = real_size_checkpoint("adatad-thumos-videomae-s", tmp_path / "thumos.pth")
    classes = [f"c{i}" for i in range(20)]
    config = ConvertConfig(preset="adatad-thumos-videomae-s")
    thumos = convert_checkpoint(ckpt, classes, config)[0].config
    assert thumos.post == OpenTADPostConfig(
        pre_nms_thresh=0.001, pre_nms_topk=2000, sigma=0.7, max_seg_num=2000, min_score=0.0,
        multiclass=True, voting_thresh=0.7, sliding_window=True,
    )  # fmt: skip
    assert thumos.thresholds == (0.3, 0.4, 0.5, 0.6, 0.7)
    ckpt = real_size_checkpoint("adatad-anet-videomae-s", tmp_path / "anet.pth")
    anet = convert_checkpoint(ckpt, ["action"], ConvertConfig(preset="adatad-anet-videomae-s"))
    anet = anet[0].config
    assert anet.input.sampling == "resize"
    assert anet.post == OpenTADPostConfig(
        pre_nms_thresh=0.001, pre_nms_topk=2000, sigma=0.7, max_seg_num=100, min_score=0.001,
        multiclass=False, voting_thresh=0.9, sliding_window=False, video_topk=2,
    )  # fmt: skip
    assert anet.thresholds == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
