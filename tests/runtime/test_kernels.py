"""The CUDA kernels (pbd_deploy/kernels/*.cu): NVRTC compiles each for Orin and Hopper here;
on a GPU (`gpu`-marked) each equals its numpy reference; the loader falls back in one line."""

import ctypes
import logging
import re

import numpy as np
import pytest

from pbd_deploy.core.postprocess import PostprocessConfig
from pbd_deploy.core.windows import (
    WindowSpec,
    model_input,
    point_positions,
    points_to_seconds,
    window_candidates,
)
from pbd_deploy.errors import PbdError
from pbd_deploy.runtime import kernels

ARCHS = ("compute_87", "compute_90")  # Jetson Orin, H100 / H200


def _nvrtc():
    try:
        return kernels.Nvrtc()
    except PbdError as exc:
        pytest.fail(f"{exc} (the dev extra installs it)")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_every_kernel_compiles_to_ptx(name, arch):
    _nvrtc()
    ptx = kernels.compile_ptx(name, arch).decode()
    assert f".target sm_{arch.split('_')[1]}" in ptx
    entries = re.findall(r"\.entry (\w+)\(", ptx)
    assert sorted(entries) == sorted(kernels.KERNELS[name])
    # --fmad=false: no fused multiply-add, so float results round as numpy's do
    assert "fma.rn" not in ptx
    if name == "preprocess":  # IEEE division, not the approximate one
        assert "div.rn.f32" in ptx and "div.approx" not in ptx and "div.full" not in ptx


@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_a_real_architecture_gets_cubin(name):
    """What CudaKernels loads on a GPU: an ELF image for that GPU, loadable by a driver of an
    older CUDA minor version than the NVRTC (PTX would need a driver as new as NVRTC)."""
    _nvrtc()
    image = kernels.compile_ptx(name, "sm_90")
    assert image.startswith(b"\x7fELF")
    for entry in kernels.KERNELS[name]:
        assert entry.encode() in image


@pytest.mark.parametrize(
    "package, library",
    [("cuda_nvrtc", "libnvrtc.so.12"), ("cu13", "libnvrtc.so.13")],  # CUDA 12 / 13 wheels
)
def test_nvrtc_is_found_in_either_wheel_layout(package, library, tmp_path, monkeypatch):
    lib = tmp_path / "nvidia" / package / "lib"
    lib.mkdir(parents=True)
    for name in (library, "libnvrtc-builtins.so.13.0"):
        (lib / name).write_bytes(b"")
    monkeypatch.setattr(kernels, "_pathfinder_nvrtc", lambda: [])
    monkeypatch.syspath_prepend(str(tmp_path))  # `nvidia` is a namespace package
    candidates = kernels._nvrtc_candidates()
    assert str(lib / library) in candidates
    assert not any("builtins" in c for c in candidates)


def test_without_fmad_false_the_decode_would_fuse(monkeypatch):
    """The check above can fail: NVRTC's default contracts decode_topk's multiply-add."""
    monkeypatch.setattr(kernels, "NVRTC_OPTIONS", ("--std=c++14",))
    ptx = _nvrtc().compile(kernels.kernel_source("decode_topk"), "d.cu", "compute_87")
    assert b"fma.rn.f32" in ptx


@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_each_source_starts_with_what_it_computes_and_its_layout(name):
    source = kernels.kernel_source(name)
    header = source[: source.index("\n\n")]
    assert all(line.startswith("//") for line in header.splitlines())
    assert "Computes" in header and "Layout" in header


def test_a_compile_error_names_the_kernel_and_the_line():
    with pytest.raises(PbdError, match=r"bad\.cu.*compute_87[\s\S]*error"):
        _nvrtc().compile("extern \"C\" __global__ void f() { undefined_name; }", "bad.cu",
                         "compute_87")  # fmt: skip


def test_missing_nvrtc_is_one_line_naming_the_wheel(monkeypatch):
    monkeypatch.setattr(kernels, "_nvrtc_candidates", lambda: ["/nonexistent/libnvrtc.so"])
    with pytest.raises(PbdError, match="pip install nvidia-cuda-nvrtc-cu12.*CUDA 13") as err:
        kernels.Nvrtc()
    assert "\n" not in str(err.value)


class _NoDevice:
    name = "cuda-python"

    def device(self):
        raise PbdError("no CUDA device")


def test_loader_falls_back_in_one_logged_line(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="pbd_deploy.runtime.kernels")
    assert kernels.load_kernels(_NoDevice()) is None
    assert [r.getMessage() for r in caplog.records] == [
        "CUDA kernels not loaded, pre- and post-processing in numpy: no CUDA device"
    ]
    caplog.clear()
    monkeypatch.setenv("PBD_CUDA_KERNELS", "0")
    assert kernels.load_kernels(_NoDevice()) is None
    assert "PBD_CUDA_KERNELS=0" in caplog.records[0].getMessage()


# --- on a GPU: each kernel against its numpy reference -----------------------------------

SPEC = WindowSpec(
    mode="video", window=24, stride=16, fps=10.0, resize=36, crop=32,
    mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), feature_dim=None,
    feature_stride=1.0, head_length=12, levels=3,
)  # fmt: skip


@pytest.fixture(scope="module")
def gpu():
    """The kernels on this machine's GPU, through runtime/cuda.py's binding."""
    from pbd_deploy.runtime.cuda import open_cuda

    try:
        cuda = open_cuda()
        cuda.device()
    except Exception as exc:  # no binding, no driver or no device
        pytest.skip(f"needs a CUDA GPU with cuda-python or pycuda: {exc}")
    loaded = kernels.CudaKernels(cuda)  # raises (fails the test) when a kernel cannot load
    yield cuda, loaded
    loaded.close()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_preprocess_equals_model_input(gpu, dtype):
    cuda, loaded = gpu
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (17, 36, 48, 3), np.uint8)  # 17 of 24 frames: padded
    batch = 3
    out = np.empty((batch, 3, SPEC.window, SPEC.crop, SPEC.crop), dtype)
    ptr = cuda.malloc(out.nbytes)
    try:
        with cuda.active():
            for slot in range(batch):
                loaded.preprocess(frames[slot:], SPEC.window, ptr, dtype, slot, SPEC)
            cuda.to_host(out, ptr)
            cuda.synchronize()
    finally:
        cuda.free(ptr)
    for slot in range(batch):
        chunk = frames[slot:]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], SPEC.window - len(chunk), 0)])
        expected = model_input(padded, SPEC)  # (3, T, crop, crop) float32
        if dtype == np.float32:
            np.testing.assert_allclose(out[slot], expected, rtol=0, atol=1e-6)
        else:  # float16: numpy's rounding of the float32 value
            np.testing.assert_array_equal(out[slot], expected.astype(np.float16))


@pytest.mark.gpu
def test_decode_topk_equals_window_candidates(gpu):
    cuda, loaded = gpu
    rng = np.random.default_rng(1)
    positions = point_positions(SPEC)
    n, k, batch = len(positions), 4, 3
    scores = np.round(rng.uniform(0, 0.01, (batch, n, k)), 3).astype(np.float32)  # ties
    segments = rng.uniform(-3, SPEC.head_length + 3, (batch, n, 2)).astype(np.float32)
    windows = [(0, 12.0), (16, 12.0), (27, 5.5)]  # the last one padded
    fps, duration = 10.0, 5.05
    for config in (PostprocessConfig(), PostprocessConfig(pre_nms_topk=9)):
        dev = [cuda.malloc(a.nbytes) for a in (scores, segments)]
        try:
            with cuda.active():
                for ptr, array in zip(dev, (scores, segments)):
                    cuda.to_device(ptr, array)
                got = loaded.decode_topk(*dev, scores.shape, windows, positions, SPEC, fps,
                                         duration, config)  # fmt: skip
        finally:
            for ptr in dev:
                cuda.free(ptr)
        for b, (start, valid) in enumerate(windows):
            to_sec = lambda p, s=start: points_to_seconds(p, s, fps, SPEC)  # noqa: E731
            expected = window_candidates(scores[b], segments[b], positions, valid, to_sec,
                                         duration, config)  # fmt: skip
            for a, e in zip(got[b], expected, strict=True):
                assert a.dtype == e.dtype
                np.testing.assert_array_equal(a, e)


@pytest.mark.gpu
def test_timing_rows_against_the_cpu_path(gpu):
    """benchmarks/cuda_kernels.py on this GPU, into gpu_suite.sh's results folder."""
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import cuda_kernels
    finally:
        sys.path.pop(0)
    result = cuda_kernels.run(repeats=5)
    assert all(row["same"] for row in result["kernels"].values()), result["kernels"]
    slug = re.sub("[^A-Za-z0-9]", "-", result["gpu"])
    cuda_kernels.write(result, root / "benchmarks" / "results" / "gpu" / slug)


# --- the plumbing, on the CPU: TensorRT stand-in + kernels emulated from their contracts --

_C_TYPES = {"int": ctypes.c_int, "float": ctypes.c_float, "double": ctypes.c_double}


def _signature(entry: str) -> list:
    """ctypes kinds of an entry point's parameters, read from its .cu source."""
    name = next(n for n, entries in kernels.KERNELS.items() if entry in entries)
    source = kernels.kernel_source(name).replace("\\\n", " ")
    for macro, body in re.findall(r"#define (\w+) ([^\n]*)", source):
        source = source.replace(macro, body)
    params = re.search(rf"void {entry}\(([^)]*)\)", source).group(1).split(",")
    return [ctypes.c_void_p if "*" in p else _C_TYPES[p.split()[-2]] for p in params]


def _emulate_preprocess(mem, dtype, src, out, valid, h, w, t, crop, top, left, slot, *stats):
    frames = mem[src][: valid * h * w * 3].reshape(valid, h, w, 3)
    x = frames[np.minimum(np.arange(t), valid - 1), top : top + crop, left : left + crop]
    mean, std = np.float32(stats[:3]), np.float32(stats[3:])
    y = ((x.astype(np.float32) - mean) / std).transpose(3, 0, 1, 2).astype(dtype).ravel()
    mem[out].view(dtype)[slot * y.size : (slot + 1) * y.size] = y


def _emulate_decode(mem, windows, scores, segments, positions, offset, limit, points, classes,
                    fpp, fps, duration, thresh, cap, out_seg, out_scores, out_labels, count):  # fmt: skip
    f32, total = np.float32, points * classes
    pos = np.repeat(mem[positions].view(f32)[:points], classes)
    for b in range(windows):
        sc = mem[scores].view(f32)[b * total : (b + 1) * total]
        seg = mem[segments].view(f32)[b * points * 2 : (b + 1) * points * 2].reshape(points, 2)
        cand = (pos < mem[limit].view(f32)[b]) & (sc.astype(np.float64) > thresh)
        mem[count].view(np.int32)[b] = cand.sum()
        for i in np.flatnonzero(cand):
            rank = (cand & ((sc > sc[i]) | ((sc == sc[i]) & (np.arange(total) < i)))).sum()
            if rank < cap:
                n, o = i // classes, b * cap + rank
                t = mem[offset].view(f32)[b] + (seg[n] + f32(0.5)) * f32(fpp)
                secs = np.minimum(np.maximum(t / f32(fps), f32(0)), f32(duration))
                mem[out_seg].view(f32)[2 * o : 2 * o + 2] = secs
                mem[out_scores].view(f32)[o], mem[out_labels].view(np.int32)[o] = sc[i], i % classes


class _EmulatedLauncher:
    """Runs each launch in numpy on the stand-in's memory, after checking its arguments
    against the kernel's signature in the .cu source."""

    def __init__(self, cuda, ptx, names):
        self.cuda = cuda

    def launch(self, name, grid, block, args):
        assert [kind for kind, _ in args] == _signature(name), name
        values = [v for _, v in args]
        if name == "decode_topk":
            work = lambda: _emulate_decode(self.cuda.mem, grid[1], *values)  # noqa: E731
        else:
            dtype = np.float16 if name.endswith("f16") else np.float32
            work = lambda: _emulate_preprocess(self.cuda.mem, dtype, *values)  # noqa: E731
        self.cuda.enqueue(work)


def test_tensorrt_runtime_with_kernels_gives_the_numpy_path_detections(
    tmp_path_factory, synth_data, tmp_path, monkeypatch
):
    import sys

    import pbd_deploy.runtime.trt_backend as trt_backend
    from pbd_deploy.runtime import Detector
    from pbd_deploy.runtime.engine_meta import DeviceInfo
    from tests.export.fake_trt import Cuda, fake_trt
    from tests.export.helpers import fake_dynamic_engine

    trt = fake_trt("10.3.0")
    h100 = DeviceInfo("10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), 132)
    engine = fake_dynamic_engine(tmp_path_factory, synth_data, tmp_path, trt, h100)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "open_cuda", Cuda)
    monkeypatch.setattr(kernels, "_Launcher", _EmulatedLauncher)
    monkeypatch.setattr(kernels, "compile_ptx", lambda name, arch: b"")
    frames = np.random.default_rng(0).integers(0, 256, (75, 32, 40, 3), np.uint8)  # 3 windows

    def detections(kernels_on: str):
        monkeypatch.setenv("PBD_CUDA_KERNELS", kernels_on)
        detector = Detector(engine)
        assert (detector.backend.kernels is not None) == (kernels_on == "1")
        return detector.detect(frames, fps=10.0, batch_size=2)

    with_kernels, numpy_path = detections("1"), detections("0")
    assert len(numpy_path) > 10
    assert with_kernels == numpy_path
