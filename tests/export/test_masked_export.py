"""A masked model (OpenTAD's padding mask) through ONNX, fp16, int8, the runtime's ONNX
Runtime and TensorRT (stand-in) backends: the second input "valid" is exported, listed,
kept and fed, and a short video's detections are the torch eval path's."""

import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.core.compare import match_predictions
from pbd_deploy.core.windows import WindowSpec
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.inference import detect_video
from pbd_deploy.export import ExportConfig, export_model
from pbd_deploy.export.config import EngineConfig
from pbd_deploy.export.tensorrt import build_engine, profiles, trtexec_command
from pbd_deploy.models.convert import ConvertConfig, convert_model_dir
from pbd_deploy.models.io import load_model
from pbd_deploy.runtime import Detector as Runtime
from pbd_deploy.runtime.engine_meta import DeviceInfo
from tests.export.fake_trt import Cuda, fake_trt
from tests.models.test_opentad_fixtures import normalised_frames
from tests.runtime.test_opentad_post import FIXTURES
from tests.runtime.test_stride_mode import WINDOW, thumos_config

H100 = DeviceInfo("10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), 132)


@pytest.fixture(scope="module")
def short_data(tmp_path_factory):
    """Synthetic 25 fps videos of 4-9 s: 25-56 input steps of every 4th frame, so each is
    one window padded past its end (the 64-step window)."""
    from pbd_deploy.data.synthetic import SynthConfig, make_synthetic

    out = tmp_path_factory.mktemp("short") / "data"
    config = SynthConfig(
        videos=6, classes=3, fps=25.0, size=48, min_duration=4, max_duration=9, seed=7,
        split_fractions=(0.34, 0.33, 0.33),
    )  # fmt: skip
    return make_synthetic(out, config)


@pytest.fixture(scope="module")
def masked(tmp_path_factory, short_data):
    root = tmp_path_factory.mktemp("masked_export")
    classes = load_annotations(short_data / "annotations.json").class_names
    config = ConvertConfig(opentad_config=thumos_config(root))
    convert_model_dir(FIXTURES / "adatad_global.pth", root / "model", classes, config)
    export = ExportConfig(data=str(short_data), calib=str(short_data), fp16=True, int8=True)
    export_model(root / "model", root / "deploy", export, force=True)
    return root


def test_valid_is_listed_exported_and_kept_by_fp16_and_int8(masked):
    manifest = json.loads((masked / "deploy" / "model.json").read_text())
    assert manifest["valid_input"] == {"name": "valid", "shape": [1], "dtype": "int64"}
    assert manifest["model_config"]["head"]["masked"] is True
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        graph = onnx.load(str(masked / "deploy" / name)).graph
        inputs = {i.name: i.type.tensor_type.elem_type for i in graph.input}
        assert inputs == {"frames": onnx.TensorProto.FLOAT, "valid": onnx.TensorProto.INT64}
    parity = manifest["parity"]
    assert parity["max_abs_diff"] < 1e-4 and parity["detections_same"]
    fp16 = manifest["files"]["model.fp16.onnx"]  # checked on padded windows, runs in ORT
    assert fp16["max_abs_diff_scores"] < 0.02 and fp16["mAP"] is not None


def test_onnx_equals_torch_on_a_padded_window(masked):
    model = load_model(masked / "model").eval()
    runtime = Runtime(masked / "deploy" / "model.onnx", providers=["CPUExecutionProvider"])
    assert runtime.masked
    ref = load_file(str(FIXTURES / "mask.safetensors"))
    x = normalised_frames(model, ref["adatad_global_v16_frames"])
    with torch.no_grad():
        want = [t.numpy() for t in model.predict(x, torch.tensor([16.0]))]
        full = [t.numpy() for t in model.predict(x)]
    got = runtime.predict(x.numpy(), [16])
    unmasked = runtime.predict(x.numpy())  # default: a full window
    for w, g, f, u in zip(want, got, full, unmasked):
        assert np.abs(w - g).max() < 1e-4
        assert np.abs(f - u).max() < 1e-4
    assert np.abs(got[0] - unmasked[0]).max() > 1e-3  # the mask changes the outputs


def test_short_videos_runtime_equals_torch_eval_path(masked, short_data, monkeypatch):
    model = load_model(masked / "model")
    ds = TadDataset(short_data, model.config)
    runtime = Runtime(masked / "deploy" / "model.onnx", providers=["CPUExecutionProvider"])
    fed = []
    run = runtime.backend.run
    monkeypatch.setattr(runtime.backend, "run", lambda x, v=None: fed.append(v) or run(x, v))
    ours, theirs = {}, {}
    for video in ds.split("test") + ds.split("validation"):
        windows = list(ds.sliding_windows(video))
        assert len(windows) == 1 and windows[0][2] < WINDOW  # one window, padded
        fed.clear()
        path = ds.root / "videos" / f"{video.video_id}.mp4"
        ours[video.video_id] = [d.to_dict() for d in runtime.detect(path, duration=video.duration)]
        assert [int(v[0]) for v in fed] == [int(np.ceil(windows[0][2]))]
        theirs[video.video_id] = detect_video(model, ds, video)
        assert len(theirs[video.video_id]) > 10
    match = match_predictions(ours, theirs, max_detections=runtime.postprocess.max_detections)
    assert match.same, match.problems[:5]


def test_tensorrt_profiles_and_trtexec_shapes_include_valid(masked):
    manifest = json.loads((masked / "deploy" / "model.json").read_text())
    manifest["input"]["shape"] = ["batch", 3, WINDOW, 32, 32]
    manifest["valid_input"]["shape"] = ["batch"]
    config = EngineConfig(min_shape=(1, WINDOW), opt_shape=(2, WINDOW), max_shape=(4, WINDOW))
    assert profiles(manifest, config)[1] == {"input": "valid", "min": [1], "opt": [2], "max": [4]}
    cmd = trtexec_command("model.onnx", "model.engine", manifest, config, 10)
    assert f"--maxShapes=frames:4x3x{WINDOW}x32x32,valid:4" in cmd


def test_trt_backend_binds_and_feeds_valid(masked, tmp_path, monkeypatch):
    """The stand-in engine adds each item's "valid" to its outputs (fake_trt.py)."""
    import pbd_deploy.runtime.trt_backend as module

    trt = fake_trt("10.3.0")
    deploy = masked / "deploy"
    for name in ("model.json", "model.onnx"):
        (tmp_path / name).write_bytes((deploy / name).read_bytes())
    manifest = json.loads((deploy / "model.json").read_text())
    manifest["input"]["shape"][0] = manifest["valid_input"]["shape"][0] = "batch"
    (tmp_path / "model.json").write_text(json.dumps(manifest))
    config = EngineConfig(min_shape=(1, WINDOW), opt_shape=(2, WINDOW), max_shape=(4, WINDOW),
                          timing_cache=str(tmp_path / "t.cache"))  # fmt: skip
    build_engine(tmp_path / "model.onnx", tmp_path / "model.engine", config, trt, H100)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    monkeypatch.setattr(module, "open_cuda", lambda: Cuda())
    backend = module.TrtBackend(tmp_path / "model.engine", use_kernels=False)
    assert (backend.input_name, backend.valid_name) == ("frames", "valid")
    x = np.random.default_rng(0).normal(size=(2, 3, WINDOW, 32, 32)).astype(np.float32)
    for valid in ([64, 16], [32, 48], [64, 16]):  # replays the captured graph with new values
        scores, _ = backend.run(x, np.array(valid))
        level = x.reshape(2, -1).mean(1) + np.array(valid)
        np.testing.assert_allclose(scores[:, 0, 0], level, rtol=1e-5)
    with pytest.raises(PbdError, match="valid"):
        backend.run(x)
    backend.close()


def test_trt_kernel_path_feeds_each_windows_valid_points(masked, tmp_path, monkeypatch):
    """`run_windows` (uint8 frames through the CUDA kernels) feeds the windows' valid head
    points, ceil'ed (the export's static batch of 1)."""
    import pbd_deploy.runtime.trt_backend as module

    trt = fake_trt("10.3.0")
    deploy = masked / "deploy"
    for name in ("model.json", "model.onnx"):
        (tmp_path / name).write_bytes((deploy / name).read_bytes())
    manifest = json.loads((deploy / "model.json").read_text())
    assert manifest["input"]["shape"][0] == 1
    config = EngineConfig(timing_cache=str(tmp_path / "t.cache"))
    build_engine(tmp_path / "model.onnx", tmp_path / "model.engine", config, trt, H100)
    cuda = Cuda()
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    monkeypatch.setattr(module, "open_cuda", lambda: cuda)
    backend = module.TrtBackend(tmp_path / "model.engine", use_kernels=False)
    seen = []

    def decode_topk(scores_ptr, segments_ptr, shape, windows, *rest):
        cuda.synchronize()
        scores = cuda.mem[scores_ptr][: 4 * int(np.prod(shape))].view(np.float32)
        seen.append(scores.reshape(shape)[:, 0, 0].copy())  # mean(zeros) + valid
        return [None] * len(windows)

    backend.kernels = SimpleNamespace(preprocess=lambda *a: None, decode_topk=decode_topk)
    spec = WindowSpec.from_model_config(manifest["model_config"])
    for valid in (40.0, 8.25, 64.0):
        chunk = np.zeros((int(np.ceil(valid)), 32, 32, 3), np.uint8)
        backend.run_windows([chunk], [(0, valid)], spec, 25.0, 3.0, None)
    np.testing.assert_array_equal(np.concatenate(seen), [40, 9, 64])
