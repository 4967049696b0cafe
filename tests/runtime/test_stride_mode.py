"""Sampling "stride" (OpenTAD's THUMOS14 input): an OpenTAD fixture converted with a
THUMOS-style config takes every 4th frame of 25 fps videos, and the torch eval path and its
exported ONNX in the torch-free runtime plan the same windows and give the same detections."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.core.compare import match_predictions
from pbd_deploy.core.video import decode_video
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.eval.inference import detect_video
from pbd_deploy.export import ExportConfig, export_model
from pbd_deploy.models.convert import ConvertConfig, convert_model_dir
from pbd_deploy.models.detector import DetectorConfig
from pbd_deploy.models.io import load_model
from pbd_deploy.runtime import Detector as Runtime
from tests.runtime.test_opentad_post import FIXTURES, THUMOS_POST

WINDOW = 64  # the fixture's total_frames and max_seq_len


def thumos_config(folder, feature_stride: int = 4, scale_factor: int = 1) -> str:
    """adatad_global with the test dataset and pipeline of OpenTAD's THUMOS14 AdaTAD configs
    (configs/adatad/thumos/*_adapter.py) at the fixture's size."""
    meta = json.loads((FIXTURES / "adatad_global.json").read_text())
    test = dict(
        type="ThumosSlidingDataset", feature_stride=feature_stride, sample_stride=1,
        window_size=WINDOW, window_overlap_ratio=0.5, test_mode=True,
        pipeline=[
            dict(type="PrepareVideoInfo", format="mp4"),
            dict(type="mmaction.DecordInit", num_threads=4),
            dict(type="LoadFrames", num_clips=1, method="sliding_window",
                 scale_factor=scale_factor),
            dict(type="mmaction.DecordDecode"),
            dict(type="mmaction.Resize", scale=(-1, 32)),
            dict(type="mmaction.CenterCrop", crop_size=32),
        ],
    )  # fmt: skip
    path = folder / "thumos_tiny.py"
    path.write_text(
        f"window_size = {WINDOW}\nmodel = {meta['model']!r}\ndataset = {dict(test=test)!r}\n"
        f"post_processing = {THUMOS_POST!r}\n"
    )
    return str(path)


@pytest.fixture(scope="module")
def data25(tmp_path_factory):
    """Four synthetic 25 fps videos of 12-22 s (75-138 input steps of every 4th frame)."""
    from pbd_deploy.data.synthetic import SynthConfig, make_synthetic

    out = tmp_path_factory.mktemp("synth25") / "data"
    config = SynthConfig(
        videos=4, classes=3, fps=25.0, size=48, min_duration=12, max_duration=22, seed=4,
        split_fractions=(0.25, 0.25, 0.5),
    )  # fmt: skip
    return make_synthetic(out, config)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, data25):
    root = tmp_path_factory.mktemp("stride_mode")
    classes = load_annotations(data25 / "annotations.json").class_names
    config = ConvertConfig(opentad_config=thumos_config(root))
    convert_model_dir(FIXTURES / "adatad_global.pth", root / "model", classes, config)
    export_model(root / "model", root / "deploy", ExportConfig(data=str(data25)), force=True)
    return root


def test_convert_selects_the_stride_input(converted):
    inp = load_model(converted / "model").config.input
    assert (inp.sampling, inp.frame_stride, inp.window, inp.stride, inp.fps) == (
        "stride", 4, WINDOW, WINDOW // 2, None)  # fmt: skip
    manifest = json.loads((converted / "deploy" / "model.json").read_text())
    spec = Runtime(converted / "deploy" / "model.onnx").spec
    assert manifest["model_config"]["input"]["frame_stride"] == 4
    assert (spec.sampling, spec.frame_stride) == ("stride", 4)
    again = DetectorConfig.from_dict(json.loads(json.dumps(load_model(converted / "model").config.to_dict())))  # fmt: skip
    assert again.input == inp


def test_torch_eval_and_onnx_runtime_plan_the_same_windows_and_detections(
    converted, data25, monkeypatch
):
    model = load_model(converted / "model")
    ds = TadDataset(data25, model.config)
    runtime = Runtime(converted / "deploy" / "model.onnx", providers=["CPUExecutionProvider"])
    ran = []
    predict = runtime.predict
    monkeypatch.setattr(runtime, "predict", lambda x, v=None: ran.append(x.copy()) or predict(x, v))
    ours, theirs = {}, {}
    for video in ds.split("test"):
        path = ds.root / "videos" / f"{video.video_id}.mp4"
        every, fps = decode_video(path, size=32)
        steps, rate = ds.info(video)
        assert steps == len(every[::4]) and rate == pytest.approx(fps / 4)  # every 4th frame
        windows = list(ds.sliding_windows(video))
        assert len(windows) >= 2  # the cross-window Soft-NMS runs
        ran.clear()
        ours[video.video_id] = [d.to_dict() for d in runtime.detect(path, duration=video.duration)]
        np.testing.assert_allclose(
            np.concatenate(ran), np.stack([w[1] for w in windows]), atol=1e-6
        )
        theirs[video.video_id] = detect_video(model, ds, video)  # the model's post-processing
        segs = np.array([d["segment"] for d in theirs[video.video_id]])
        assert len(segs) > 10 and segs.min() >= 0 and segs.max() <= video.duration
    match = match_predictions(ours, theirs, max_detections=runtime.postprocess.max_detections)
    assert match.same, match.problems[:5]


def test_cuda_kernel_path_is_not_taken(converted, data25, monkeypatch):
    """The CUDA path places windows with window_starts; OpenTAD's placement runs on the host."""
    runtime = Runtime(converted / "deploy" / "model.onnx")
    video = load_annotations(data25 / "annotations.json").split("test")[0]
    path = data25 / "videos" / f"{video.video_id}.mp4"
    expected = runtime.detect(path, duration=video.duration)
    monkeypatch.setattr(runtime.backend, "kernels", object(), raising=False)
    monkeypatch.setattr(runtime, "_gpu_candidates", lambda *a: pytest.fail("CUDA path ran"))
    assert runtime.detect(path, duration=video.duration) == expected


def test_array_input_is_strided_the_same_way(converted, data25):
    runtime = Runtime(converted / "deploy" / "model.onnx")
    video = load_annotations(data25 / "annotations.json").split("test")[0]
    path = data25 / "videos" / f"{video.video_id}.mp4"
    every, fps = decode_video(path, size=32)
    frames, rate = runtime.load(every, fps=fps)
    np.testing.assert_array_equal(frames, runtime.load(path)[0])
    assert rate == pytest.approx(fps / 4)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"fps": 7.5}, "--fps does not apply here"),
        ({"scale_factor": 2}, "scale_factor=2 are not supported"),
        ({"feature_stride": -1}, "without a positive feature_stride"),
    ],
)
def test_bad_combinations_are_one_line_exit_2(tmp_path, change, message):
    config = thumos_config(tmp_path, **{k: v for k, v in change.items() if k != "fps"})
    args = ["convert", str(FIXTURES / "adatad_global.pth"), "--opentad-config", config,
            "--classes", "a,b,c", "--out", str(tmp_path / "out")]  # fmt: skip
    if "fps" in change:
        args += ["--fps", str(change["fps"])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
