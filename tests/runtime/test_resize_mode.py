"""Sampling "resize" (OpenTAD's ActivityNet input): a tiny model through the torch eval path
and through its exported ONNX in the torch-free runtime gives the same detections."""

import json

import numpy as np
import pytest
import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.core.video import decode_video, resize_indices
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.export import ExportConfig, export_model
from pbd_deploy.models.detector import Detector, DetectorConfig, InputConfig
from pbd_deploy.models.io import load_model, save_model
from pbd_deploy.runtime import Detector as Runtime
from tests.conftest import tiny_config
from tests.export.helpers import runtime_and_torch

WINDOW = 32  # the synthetic videos have 80..120 frames: each is picked down to 32


def resize_config(classes) -> DetectorConfig:
    config = tiny_config(classes=classes, window=WINDOW)
    config.input = InputConfig(sampling="resize", window=WINDOW, resize=32, crop=32)
    return config


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synth_data):
    root = tmp_path_factory.mktemp("resize_mode")
    classes = load_annotations(synth_data / "annotations.json").class_names
    torch.manual_seed(3)
    save_model(Detector(resize_config(classes)).eval(), root / "model")
    export_model(root / "model", root / "deploy", ExportConfig(data=str(synth_data)), force=True)
    return root


def test_config_json_and_model_json_keep_the_sampling(exported):
    model = load_model(exported / "model")
    assert model.config.input.sampling == "resize" and model.config.input.fps is None
    again = DetectorConfig.from_dict(json.loads(json.dumps(model.config.to_dict())))
    assert again.input == model.config.input
    manifest = json.loads((exported / "deploy" / "model.json").read_text())
    assert manifest["model_config"]["input"]["sampling"] == "resize"
    assert Runtime(exported / "deploy" / "model.onnx").spec.sampling == "resize"


def test_each_video_is_one_window_of_the_picked_frames(exported, synth_data):
    model = load_model(exported / "model")
    ds = TadDataset(synth_data, model.config)
    runtime = Runtime(exported / "deploy" / "model.onnx")
    for video in ds.split("test"):
        path = ds.root / "videos" / f"{video.video_id}.mp4"
        every, src_fps = decode_video(path, size=32)
        assert len(every) > WINDOW
        expected = every[resize_indices(len(every), WINDOW)]
        frames, rate = runtime.load(path)
        np.testing.assert_array_equal(frames, expected)
        assert len(frames) / rate == pytest.approx(len(every) / src_fps)
        windows = list(ds.sliding_windows(video))
        assert [(s, v) for s, _, v in windows] == [(0, model.config.head.length)]
        np.testing.assert_array_equal(ds.read(video, 0, WINDOW), expected)
        assert ds.info(video) == (WINDOW, pytest.approx(rate))


def test_torch_eval_and_onnx_runtime_give_the_same_detections(exported, synth_data):
    ours, theirs, ds, match = runtime_and_torch(exported, synth_data)
    for video in ds.split("test"):
        assert ours[video.video_id]
        # OpenTAD's map: no detection outside the video, and starts reach its beginning
        segs = np.array([d["segment"] for d in theirs[video.video_id]])
        assert segs.min() >= 0 and segs.max() <= video.duration
    assert match.same, match.problems[:5]


def test_array_input_is_picked_the_same_way(exported, synth_data):
    runtime = Runtime(exported / "deploy" / "model.onnx")
    video = load_annotations(synth_data / "annotations.json").split("test")[0]
    path = synth_data / "videos" / f"{video.video_id}.mp4"
    every, fps = decode_video(path, size=32)  # already at the model's size: no rescaling
    frames, rate = runtime.load(every, fps=fps)
    np.testing.assert_array_equal(frames, runtime.load(path)[0])
    assert rate == pytest.approx(WINDOW * fps / len(every))


def test_resize_with_features_or_a_rate_is_refused_in_one_line(exported):
    data = load_model(exported / "model").config.to_dict()
    bad = [
        ({"fps": 15.0}, "input.fps"),
        ({"mode": "features", "feature_dim": 8}, "works on videos only"),
        ({"sampling": "every"}, "must be 'rate', 'resize' or 'stride'"),
    ]
    for change, message in bad:
        config = json.loads(json.dumps(data))
        config["input"].update(change)
        with pytest.raises(PbdError, match=message) as err:
            DetectorConfig.from_dict(config)
        assert "\n" not in str(err.value)


def test_cuda_kernels_are_bypassed_for_resized_videos(exported, synth_data, monkeypatch):
    """The kernels map points by the sliding-window formula; resized videos use numpy."""
    runtime = Runtime(exported / "deploy" / "model.onnx")
    video = load_annotations(synth_data / "annotations.json").split("test")[0]
    path = synth_data / "videos" / f"{video.video_id}.mp4"
    expected = runtime.detect(path, duration=video.duration)
    monkeypatch.setattr(runtime.backend, "kernels", object(), raising=False)

    def refuse(*args):
        raise AssertionError("the CUDA kernel path ran for a resized video")

    monkeypatch.setattr(runtime, "_gpu_candidates", refuse)
    assert runtime.detect(path, duration=video.duration) == expected


def test_converted_anet_model_with_opentads_post_processing(tmp_path, synth_data):
    """An ActivityNet-style OpenTAD config: resize input + class-agnostic Soft-NMS with
    voting, per video (no cross-window step); torch eval and the ONNX runtime agree."""
    from pbd_deploy.models.convert import ConvertConfig, convert_model_dir
    from tests.models.test_opentad_resize_input import FIXTURES, config_file

    post = dict(nms=dict(use_soft_nms=True, sigma=0.7, max_seg_num=100, min_score=0.001,
                         multiclass=False, voting_thresh=0.9))  # fmt: skip
    classes = load_annotations(synth_data / "annotations.json").class_names
    config = ConvertConfig(opentad_config=str(config_file(tmp_path, post_processing=post)))
    convert_model_dir(FIXTURES / "adatad_abs_pe.pth", tmp_path / "model", classes, config)
    export_model(tmp_path / "model", tmp_path / "deploy", ExportConfig())
    model = load_model(tmp_path / "model")
    assert model.config.input.sampling == "resize" and not model.config.post.sliding_window
    assert model.config.post.max_detections == 100
    _, theirs, ds, match = runtime_and_torch(tmp_path, synth_data)
    for video in ds.split("test"):
        segs = np.array([d["segment"] for d in theirs[video.video_id]])
        assert 10 < len(segs) <= 100 and segs.min() >= 0 and segs.max() <= video.duration
    assert match.same, match.problems[:5]
