"""The torch-free runtime: same detections as the torch eval path, no torch, clear refusals."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pbd_deploy.core.annotations import ground_truth
from pbd_deploy.core.compare import assert_same_detections, assert_same_map, match_predictions
from pbd_deploy.core.metrics import THUMOS_THRESHOLDS, evaluate_detections
from pbd_deploy.core.video import decode_video
from pbd_deploy.core.windows import point_positions
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.inference import detect_video
from pbd_deploy.models.actionformer import point_grid
from pbd_deploy.models.io import load_model
from pbd_deploy.runtime import Detector
from tests.export.helpers import deployed

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deploy(tmp_path_factory, synth_data):
    return deployed(tmp_path_factory, synth_data)


@pytest.fixture(scope="module")
def torch_side(deploy, synth_data):
    model = load_model(deploy.parent / "model")
    return model, TadDataset(synth_data, model.config)


def test_detect_video_file_matches_torch_and_map_is_equal(deploy, torch_side):
    """Every detection of every test video, and the mAP, as `core.compare` defines "same".

    ORT and torch scores differ by ~1e-7 (float sums in another order), so near-tied
    candidates may leave Soft-NMS in another order: compared one-to-one, not by position.
    """
    model, ds = torch_side
    runtime = Detector(deploy / "model.onnx", providers=["CPUExecutionProvider"])
    videos = ds.split("test")
    assert len(videos) >= 3
    ours, theirs = {}, {}
    for video in videos:
        path = ds.root / "videos" / f"{video.video_id}.mp4"
        dets = runtime.detect(path, duration=video.duration)
        ours[video.video_id] = [d.to_dict() for d in dets]
        theirs[video.video_id] = detect_video(model, ds, video, runtime.postprocess)
        assert len(ours[video.video_id]) > 0
    match = match_predictions(ours, theirs, max_detections=runtime.postprocess.max_detections)
    assert match.same, match.problems[:5]
    gt = ground_truth(videos)
    assert_same_map(
        evaluate_detections(gt, ours, THUMOS_THRESHOLDS),
        evaluate_detections(gt, theirs, THUMOS_THRESHOLDS),
        match,
        gt,
    )


def test_array_input_gives_the_same_detections(deploy, synth_data, torch_side):
    _, ds = torch_side
    runtime = Detector(deploy)
    path = ds.root / "videos" / f"{ds.split('test')[0].video_id}.mp4"
    frames, fps = decode_video(path, fps=10.0)  # original size: the runtime resizes
    assert min(frames.shape[1:3]) != runtime.spec.resize
    from_file = runtime.detect(path)
    from_array = runtime.detect(frames, fps=fps)
    assert len(from_array) == len(from_file) > 0
    # Resizing RGB instead of YUV moves pixels by a few levels: close, not identical.
    assert from_array[0].label == from_file[0].label


def test_windows_and_positions_match_the_torch_dataset(deploy, torch_side):
    model, ds = torch_side
    runtime = Detector(deploy)
    np.testing.assert_array_equal(runtime.positions, point_grid(model.config.head)[0].numpy())
    video = ds.split("test")[0]
    data, fps = ds.load(video)
    from pbd_deploy.core.windows import points_to_seconds, sliding_windows

    ours = list(sliding_windows(data, runtime.spec))
    theirs = list(ds.sliding_windows(video))
    assert len(ours) == len(theirs) > 1
    for (s1, x1, v1), (s2, x2, v2) in zip(ours, theirs):
        assert s1 == s2 and v1 == v2 and np.array_equal(x1, x2)
    pts = np.array([[0.0, 3.5], [10.0, 15.0]])
    np.testing.assert_array_equal(
        points_to_seconds(pts, 24, fps, runtime.spec), ds.points_to_seconds(pts, 24, fps)
    )
    assert point_positions(runtime.spec).dtype == np.float32


def test_static_batch_runs_in_chunks(deploy):
    runtime = Detector(deploy)
    assert runtime.backend.static_batch == 1
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32, 32)).astype(np.float32)
    scores, segments = runtime.predict(x)
    assert scores.shape[0] == segments.shape[0] == 3
    # The same session runs the same batch-1 chunk: bit-identical in one process.
    np.testing.assert_array_equal(scores[1], runtime.predict(x[1:2])[0][0])


_NO_TORCH = """
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
from pbd_deploy.runtime import Detector
dets = Detector(sys.argv[1]).detect(sys.argv[2])
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print(json.dumps([d.to_dict() for d in dets]))
"""


def test_runtime_runs_where_importing_torch_fails(deploy, torch_side):
    _, ds = torch_side
    video = ds.root / "videos" / f"{ds.split('test')[0].video_id}.mp4"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_NO_TORCH), str(deploy / "model.onnx"), str(video)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    in_process = Detector(deploy).detect(video)
    # Another process, maybe another ORT thread count (PBD_TEST_ORT_THREADS): the same
    # detections by core.compare's definition, not necessarily the same bits.
    assert_same_detections(json.loads(proc.stdout), in_process, max_detections=200)


def test_ort_threads_of_the_run_reach_the_runtime(deploy, ort_threads):
    """PBD_TEST_ORT_THREADS (tests/conftest.py) sets the sessions the runtime opens."""
    options = Detector(deploy).backend.session.get_session_options()
    assert options.intra_op_num_threads == ort_threads
    one = Detector(deploy, threads=1).backend.session.get_session_options()
    assert one.intra_op_num_threads == 1


def test_missing_file_and_missing_manifest(tmp_path, deploy):
    with pytest.raises(PbdError, match="model file not found"):
        Detector(tmp_path / "model.onnx")
    shutil.copy(deploy / "model.onnx", tmp_path / "model.onnx")
    with pytest.raises(PbdError, match="model.json is missing"):
        Detector(tmp_path / "model.onnx")


def test_onnx_from_another_model_is_refused(tmp_path, deploy):
    import onnx
    from onnx import numpy_helper

    other = onnx.load(str(deploy / "model.onnx"))  # the same graph with other weights
    weights = next(t for t in other.graph.initializer if len(t.dims) == 2)
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.01, weights.name))
    mixed = tmp_path / "mixed"
    shutil.copytree(deploy, mixed)
    onnx.save(other, str(mixed / "model.onnx"))
    with pytest.raises(PbdError, match="does not belong to .*another model"):
        Detector(mixed / "model.onnx")


def test_cli_infer_and_eval_use_the_artifact(deploy, synth_data, tmp_path):
    from click.testing import CliRunner

    from pbd_deploy.cli import main

    video = sorted((synth_data / "videos").glob("*.mp4"))[0]
    out = tmp_path / "dets.json"
    result = CliRunner().invoke(
        main, ["infer", str(deploy / "model.onnx"), str(video), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["detections"]
    # Same process, same code, same ORT thread count: bit-identical is the right claim here.
    expected = [d._asdict() for d in Detector(deploy).detect(video)]
    assert rows == expected and f"{len(rows)} detections" in result.output
    missing = CliRunner().invoke(main, ["infer", str(tmp_path / "no.onnx"), str(video)])
    assert missing.exit_code == 2 and "model file not found" in missing.output
    ev = CliRunner().invoke(
        main, ["eval", str(deploy / "model.onnx"), "--data", str(synth_data), "--json"]
    )
    assert ev.exit_code == 0, ev.output
    manifest = json.loads((deploy / "model.json").read_text())
    # The export measured this file in this process with the same ORT threads and the CPU
    # provider (the only one the test extras install): equal bits. With onnxruntime-gpu the
    # CLI would pick CUDA, another device, and this would compare through core.compare.
    assert json.loads(ev.output)["average_mAP"] == manifest["accuracy"]["onnx_fp32"]["average_mAP"]
