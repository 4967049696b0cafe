"""The CUDA kernels of `pbd_deploy/kernels/*.cu`, compiled at run time with NVRTC.

Used by the TensorRT backend so that a window stays on the GPU: `preprocess.cu` turns the
uint8 frames of a window into the engine's normalised input in place (only uint8 crosses the
bus: 79 MB of decoded 160x213 frames instead of 236 MB of float32 for a 768-frame 160x160
window), and `decode_topk.cu` turns the
engine's outputs into each window's candidates in seconds (only the kept candidates come
back). Soft-NMS stays on the CPU (`core.nms`, compiled): its decays must be numpy's exp to
the last bit for identical detections, which a GPU's exp is not.

NVRTC is loaded with ctypes from NVIDIA's wheel (`nvidia-cuda-nvrtc-cu12`, or
`nvidia-cuda-nvrtc` 13.x for CUDA 13) or the CUDA toolkit (JetPack has it); it needs no
GPU, so the tests compile every kernel for sm_87 (Orin) and sm_90 on any machine. Each
kernel is compiled once per architecture and process, to CUBIN for the GPU it runs on; each
TensorRT backend loads the modules on its device and launches them on its stream, through
its CUDA binding (cuda-python's driver API or pycuda).
Set PBD_CUDA_KERNELS=0 to run the numpy path instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import importlib
import importlib.util
import logging
import os
from importlib import resources
from pathlib import Path

import numpy as np

from pbd_deploy.errors import PbdError

log = logging.getLogger(__name__)

# kernel file -> entry points
KERNELS = {"preprocess": ("preprocess_f32", "preprocess_f16"), "decode_topk": ("decode_topk",)}
# --fmad=false: multiplies and adds round separately, as in numpy (bit-identical results)
NVRTC_OPTIONS = ("--fmad=false", "--std=c++14")
TILE = 256  # decode_topk's block size (its TILE)


def kernel_source(name: str) -> str:
    """The CUDA C source of kernels/<name>.cu."""
    return (resources.files("pbd_deploy") / "kernels" / f"{name}.cu").read_text()


# NVRTC's place in NVIDIA's wheels: CUDA 12's nvidia-cuda-nvrtc-cu12 has nvidia/cuda_nvrtc/lib,
# CUDA 13's nvidia-cuda-nvrtc (13.x) puts every library of the toolkit in nvidia/cu13/lib
WHEEL_PACKAGES = ("nvidia.cuda_nvrtc", "nvidia.cu13")


def _nvrtc_candidates() -> list[str]:
    found = _pathfinder_nvrtc()
    for package in WHEEL_PACKAGES if _has_nvidia() else ():
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            found += sorted(glob.glob(str(Path(root) / "lib" / "libnvrtc.so*")))
    name = ctypes.util.find_library("nvrtc")
    found += [name] if name else []
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home:
            found += sorted(glob.glob(str(Path(home) / "lib64" / "libnvrtc.so*")))
    found += ["libnvrtc.so", "libnvrtc.so.12", "libnvrtc.so.13"]
    return [f for f in found if "builtins" not in f and ".alt." not in f]


def _pathfinder_nvrtc() -> list[str]:
    """The libnvrtc that cuda-python's own finder (cuda.pathfinder, installed with
    cuda-bindings >= 12.9) loads: NVIDIA wheels of any layout, conda, CUDA_HOME."""
    if importlib.util.find_spec("cuda") is None:
        return []
    try:
        pathfinder = importlib.import_module("cuda.pathfinder")
        return [pathfinder.load_nvidia_dynamic_lib("nvrtc").abs_path]
    except Exception:  # not installed, or no NVRTC where it looks: the other places follow
        return []


def _has_nvidia() -> bool:
    return importlib.util.find_spec("nvidia") is not None


class Nvrtc:
    """The few NVRTC calls that compile one source to PTX or CUBIN (ctypes, CUDA 12/13)."""

    def __init__(self):
        errors = []
        for path in _nvrtc_candidates():
            try:
                self.lib = ctypes.CDLL(path)
                self.path = path
                break
            except OSError as exc:
                errors.append(str(exc))
        else:
            raise PbdError(
                "NVRTC not found (" + "; ".join(errors[-2:]) + "); install it with: pip "
                "install nvidia-cuda-nvrtc-cu12 (CUDA 13: nvidia-cuda-nvrtc; or use the CUDA "
                "toolkit's libnvrtc)"
            )
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def _ok(self, result: int, what: str) -> None:
        if result != 0:
            raise PbdError(f"NVRTC {what} failed: {self.lib.nvrtcGetErrorString(result).decode()}")

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._ok(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "version")
        return major.value, minor.value

    def compile(self, source: str, name: str, arch: str) -> bytes:
        """PTX of `source` for a virtual architecture such as "compute_87", or CUBIN (an
        ELF image) for a real one such as "sm_90"."""
        prog = ctypes.c_void_p()
        self._ok(
            self.lib.nvrtcCreateProgram(
                ctypes.byref(prog), source.encode(), name.encode(), 0, None, None
            ),
            "create program",
        )
        try:
            options = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in NVRTC_OPTIONS)]
            argv = (ctypes.c_char_p * len(options))(*options)
            result = self.lib.nvrtcCompileProgram(prog, len(options), argv)
            if result != 0:
                size = ctypes.c_size_t()
                self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
                text = ctypes.create_string_buffer(size.value)
                self.lib.nvrtcGetProgramLog(prog, text)
                raise PbdError(f"NVRTC could not compile {name} for {arch}:\n{text.value.decode()}")
            kind = "CUBIN" if arch.startswith("sm_") else "PTX"
            size = ctypes.c_size_t()
            self._ok(getattr(self.lib, f"nvrtcGet{kind}Size")(prog, ctypes.byref(size)), kind)
            image = ctypes.create_string_buffer(size.value)
            self._ok(getattr(self.lib, f"nvrtcGet{kind}")(prog, image), kind)
            return image.raw
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


@functools.lru_cache(maxsize=None)
def compile_ptx(name: str, arch: str) -> bytes:
    """PTX (NUL-terminated) of kernels/<name>.cu for `arch` ("compute_87", "compute_90" ...),
    or its CUBIN for a real architecture ("sm_87", "sm_90" ...)."""
    return Nvrtc().compile(kernel_source(name), f"{name}.cu", arch)


class _Launcher:
    """Loads PTX or CUBIN and launches its kernels on a `runtime.cuda` binding's stream."""

    def __init__(self, cuda, ptx: bytes, names):
        self.cuda = cuda
        if cuda.name == "pycuda":
            module = cuda.drv.module_from_buffer(ptx)
            self.functions = {n: module.get_function(n) for n in names}
        else:
            self.drv = importlib.import_module("cuda.bindings.driver")
            cuda.rt.cudaFree(0)  # the primary context current on this thread
            image = np.frombuffer(ptx, np.uint8)  # CUBIN, or NUL-terminated PTX text
            module = self._ok(self.drv.cuModuleLoadData(image.ctypes.data))
            self.functions = {
                n: self._ok(self.drv.cuModuleGetFunction(module, n.encode())) for n in names
            }
        self.module = module  # keeps it loaded

    def _ok(self, result):
        err, *rest = result
        if int(err) != 0:
            raise PbdError(f"CUDA driver call failed: {err}")
        return rest[0] if rest else None

    def launch(self, name: str, grid, block, args) -> None:
        """Launch `name` with args = [(ctypes type, value), ...] on the binding's stream."""
        grid, block = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
        if self.cuda.name == "pycuda":
            numpy_of = {ctypes.c_void_p: np.uintp, ctypes.c_int: np.int32}
            numpy_of.update({ctypes.c_float: np.float32, ctypes.c_double: np.float64})
            values = [numpy_of[kind](value) for kind, value in args]
            self.functions[name](*values, grid=grid[:2], block=block, stream=self.cuda._stream)
            return
        holders = [kind(value) for kind, value in args]
        params = (ctypes.c_void_p * len(holders))(*(ctypes.addressof(h) for h in holders))
        stream = self.drv.CUstream(int(self.cuda.stream))
        self._ok(
            self.drv.cuLaunchKernel(
                self.functions[name], *grid, *block, 0, stream, ctypes.addressof(params), 0
            )
        )


class CudaKernels:
    """Both kernels on the device of a `runtime.cuda` binding (its primary context)."""

    def __init__(self, cuda):
        self.cuda = cuda
        _, (major, minor) = cuda.device()
        # CUBIN for this GPU, not PTX: a driver JIT-compiles only PTX of its own CUDA version
        # or older, while CUBIN from a newer NVRTC of the same major loads (e.g. NVRTC 13.5
        # with the driver of CUDA 13.0)
        self.arch = f"sm_{major}{minor}"
        with cuda.active():
            self.launchers = {
                name: _Launcher(cuda, compile_ptx(name, self.arch), entries)
                for name, entries in KERNELS.items()
            }
        self._staging: tuple[int, int] | None = None  # (device pointer, bytes)

    def _stage(self, nbytes: int) -> int:
        if self._staging is None or self._staging[1] < nbytes:
            if self._staging is not None:
                self.cuda.free(self._staging[0])
            self._staging = (self.cuda.malloc(nbytes), nbytes)
        return self._staging[0]

    def preprocess(self, frames: np.ndarray, window: int, out_ptr: int, dtype, slot: int, spec):
        """Upload frames (valid, H, W, 3) uint8 and write input slot `slot` of `out_ptr`
        ((B, 3, window, crop, crop) of `dtype`), padding past `valid` with the last frame."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        valid, h, w, _ = frames.shape
        crop = spec.crop
        if h < crop or w < crop:
            raise PbdError(f"frames of {h}x{w} are smaller than the model's {crop}x{crop} crop")
        src = self._stage(frames.nbytes)
        self.cuda.to_device(src, frames)
        mean, std = np.float32(spec.mean), np.float32(spec.std)
        ints = (valid, h, w, window, crop, (h - crop) // 2, (w - crop) // 2, slot)
        args = [(ctypes.c_void_p, src), (ctypes.c_void_p, out_ptr)]
        args += [(ctypes.c_int, int(v)) for v in ints]
        args += [(ctypes.c_float, float(v)) for v in (*mean, *std)]
        total = 3 * window * crop * crop
        name = {np.dtype(np.float32): "preprocess_f32", np.dtype(np.float16): "preprocess_f16"}
        blocks = min(-(-total // 256), 65535)
        self.launchers["preprocess"].launch(name[np.dtype(dtype)], (blocks,), (256,), args)

    def decode_topk(
        self, scores_ptr, segments_ptr, shape, windows, positions, spec, fps, duration, config
    ):
        """Candidates of each window (core.windows.window_candidates) from the engine outputs.

        Args:
            scores_ptr, segments_ptr: device (B, N, K) and (B, N, 2) float32 outputs.
            shape: (B, N, K).
            windows: (start step, valid points) of the first len(windows) batch slots.
            positions: (N,) float32 level-0 position of each point.

        Returns:
            One (segments (M, 2) float64, scores (M,) float64, labels (M,) int64) per window.
        """  # noqa: D417
        batch, points, classes = shape
        cap = min(config.pre_nms_topk, points * classes)
        n = len(windows)
        f32 = np.float32
        offset = np.array([f32(start * spec.step_frames) for start, _ in windows], f32)
        limit = np.array([f32(valid) for _, valid in windows], f32)
        host = {
            "positions": np.ascontiguousarray(positions, f32), "offset": offset, "limit": limit,
            "count": np.zeros(n, np.int32), "segments": np.empty((n, cap, 2), f32),
            "scores": np.empty((n, cap), f32), "labels": np.empty((n, cap), np.int32),
        }  # fmt: skip
        dev = {k: self.cuda.malloc(max(v.nbytes, 1)) for k, v in host.items()}
        try:
            for k in ("positions", "offset", "limit", "count"):
                self.cuda.to_device(dev[k], host[k])
            args = [(ctypes.c_void_p, p) for p in (scores_ptr, segments_ptr)]
            args += [(ctypes.c_void_p, dev[k]) for k in ("positions", "offset", "limit")]
            args += [(ctypes.c_int, points), (ctypes.c_int, classes)]
            args += [
                (ctypes.c_float, float(f32(v))) for v in (spec.frames_per_point, fps, duration)
            ]
            args += [(ctypes.c_double, float(config.pre_nms_thresh)), (ctypes.c_int, cap)]
            args += [(ctypes.c_void_p, dev[k]) for k in ("segments", "scores", "labels", "count")]
            grid = (-(-points * classes // TILE), n)
            self.launchers["decode_topk"].launch("decode_topk", grid, (TILE,), args)
            for k in ("segments", "scores", "labels", "count"):
                self.cuda.to_host(host[k], dev[k])
            self.cuda.synchronize()
        finally:
            for ptr in dev.values():
                self.cuda.free(ptr)
        parts = []
        for b in range(n):
            m = min(int(host["count"][b]), cap)
            segs = host["segments"][b, :m].astype(np.float64)
            keep = segs[:, 1] > segs[:, 0]  # select_topk drops empty segments after the top-k
            parts.append(
                (segs[keep], host["scores"][b, :m][keep].astype(np.float64),
                 host["labels"][b, :m][keep].astype(np.int64))
            )  # fmt: skip
        return parts

    def close(self) -> None:
        if self._staging is not None:
            self.cuda.free(self._staging[0])
            self._staging = None


def load_kernels(cuda) -> CudaKernels | None:
    """The kernels on this device, or None (one log line saying why: numpy runs instead)."""
    if os.environ.get("PBD_CUDA_KERNELS", "1") == "0":
        log.info("CUDA kernels off (PBD_CUDA_KERNELS=0): pre- and post-processing in numpy")
        return None
    try:
        kernels = CudaKernels(cuda)
    except Exception as exc:  # any failure (no NVRTC, old driver, ...) keeps the numpy path
        log.info("CUDA kernels not loaded, pre- and post-processing in numpy: %s", exc)
        return None
    log.info("CUDA kernels loaded for %s (NVRTC, CUBIN cached)", kernels.arch)
    return kernels
