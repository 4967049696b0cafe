"""The CUDA kernels (pbd_deploy/kernels) against the CPU path they replace, on a real-size window.

Needs a CUDA GPU with cuda-python or pycuda and NVRTC (benchmarks/gpu_suite.sh runs it).
Each row times, side by side in one run (median of --repeats), what crosses the bus and what
runs on the host for one window of VideoMAE-S + ActionFormer on THUMOS14 (768 frames of
160x213 decoded, 160x160 crop; 6 levels, 378 points, 20 classes):
  preprocess   CPU: model_input (crop, normalise, transpose) + copy of 236 MB float32 to the
               GPU; kernel: copy of the 79 MB uint8 window + preprocess_f32 in place.
  decode_topk  CPU: copy of the outputs to the host + window_candidates; kernel: decode_topk
               + copy of the kept candidates.
and checks that the kernel's result equals the CPU's (float32 within 1e-6, candidates
identical). Writes benchmarks/results/cuda_kernels.{json,md}; the gpu-marked test
tests/runtime/test_kernels.py runs it into benchmarks/results/gpu/<GPU>/ (gpu_suite.sh's
folder). Usage:
    python benchmarks/cuda_kernels.py [--repeats 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe_machine, save_results  # noqa: E402

from pbd_deploy.core.postprocess import PostprocessConfig  # noqa: E402
from pbd_deploy.core.windows import (  # noqa: E402
    WindowSpec,
    model_input,
    point_positions,
    points_to_seconds,
    window_candidates,
)
from pbd_deploy.runtime.cuda import open_cuda  # noqa: E402
from pbd_deploy.runtime.kernels import CudaKernels  # noqa: E402

SPEC = WindowSpec(
    mode="video", window=768, stride=384, fps=10.0, resize=160, crop=160,
    mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), feature_dim=None,
    feature_stride=1.0, head_length=192, levels=6,
)  # fmt: skip


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def bench_preprocess(cuda, kernels, repeats):
    frames = np.random.default_rng(0).integers(0, 256, (SPEC.window, 160, 213, 3), np.uint8)
    x = np.empty((1, 3, SPEC.window, SPEC.crop, SPEC.crop), np.float32)
    ptr = cuda.malloc(x.nbytes)
    got = np.empty_like(x)

    def cpu():
        x[0] = model_input(frames, SPEC)
        cuda.to_device(ptr, x)
        cuda.synchronize()

    def gpu():
        kernels.preprocess(frames, SPEC.window, ptr, np.float32, 0, SPEC)
        cuda.synchronize()

    try:
        with cuda.active():
            row = {"cpu_ms": _median_ms(cpu, repeats), "kernel_ms": _median_ms(gpu, repeats)}
            cuda.to_host(got, ptr)
            cuda.synchronize()
    finally:
        cuda.free(ptr)
    row["max_abs_diff"] = float(np.abs(got[0] - model_input(frames, SPEC)).max())
    row["same"] = row["max_abs_diff"] <= 1e-6
    return row


def bench_decode(cuda, kernels, repeats):
    rng = np.random.default_rng(1)
    positions = point_positions(SPEC)
    n, k = len(positions), 20
    scores = rng.uniform(0, 0.02, (1, n, k)).astype(np.float32)
    segments = rng.uniform(-2, SPEC.head_length + 2, (1, n, 2)).astype(np.float32)
    config, fps, duration, start, valid = PostprocessConfig(), 10.0, 200.0, 384, 150.0
    dev = [cuda.malloc(a.nbytes) for a in (scores, segments)]
    host = [np.empty_like(scores), np.empty_like(segments)]
    to_sec = lambda p: points_to_seconds(p, start, fps, SPEC)  # noqa: E731

    def cpu():
        for array, ptr in zip(host, dev):
            cuda.to_host(array, ptr)
        cuda.synchronize()
        return window_candidates(host[0][0], host[1][0], positions, valid, to_sec, duration, config)

    def gpu():
        return kernels.decode_topk(*dev, scores.shape, [(start, valid)], positions, SPEC, fps,
                                   duration, config)[0]  # fmt: skip

    try:
        with cuda.active():
            for array, ptr in zip((scores, segments), dev):
                cuda.to_device(ptr, array)
            row = {"cpu_ms": _median_ms(cpu, repeats), "kernel_ms": _median_ms(gpu, repeats)}
            row["same"] = all(np.array_equal(a, b) for a, b in zip(gpu(), cpu()))
            row["candidates"] = int(len(cpu()[0]))
    finally:
        for ptr in dev:
            cuda.free(ptr)
    return row


def run(repeats: int) -> dict:
    """Both rows, with the GPU and binding they ran on."""
    cuda = open_cuda()
    kernels = CudaKernels(cuda)
    try:
        rows = {
            "preprocess (768x160x160 window, fp32)": bench_preprocess(cuda, kernels, repeats),
            "decode_topk (378 points x 20 classes)": bench_decode(cuda, kernels, repeats),
        }
    finally:
        with cuda.active():
            kernels.close()
    gpu, cc = cuda.device()
    return {"machine": describe_machine(), "gpu": gpu, "compute_capability": list(cc),
            "binding": cuda.name, "repeats": repeats, "kernels": rows}  # fmt: skip


def write(result: dict, out: Path | None = None) -> str:
    """Save result as cuda_kernels.{json,md} (benchmarks/results/ or `out`); the markdown."""
    cc = result["compute_capability"]
    lines = [
        "# CUDA kernels against the CPU path (one real-size window)",
        "",
        f"GPU: {result['gpu']} (sm_{cc[0]}{cc[1]}, {result['binding']}); host "
        f"{result['machine']['cpu']}; median of {result['repeats']} runs. The CPU path "
        "includes the copy it needs (float32 input up, outputs down); the kernel path its own "
        "(uint8 frames up, candidates down).",
        "",
        "| kernel | CPU path ms | kernel path ms | speed-up | same result |",
        "|---|---|---|---|---|",
    ]
    for name, r in result["kernels"].items():
        lines.append(f"| {name} | {r['cpu_ms']:.2f} | {r['kernel_ms']:.2f} | "
                     f"{r['cpu_ms'] / r['kernel_ms']:.1f}x | {r['same']} |")  # fmt: skip
    lines += ["", f"Command: `python benchmarks/cuda_kernels.py --repeats {result['repeats']}`"]
    markdown = "\n".join(lines) + "\n"
    if out is None:
        save_results("cuda_kernels", result, markdown)
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "cuda_kernels.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "cuda_kernels.md").write_text(markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, help="Folder for the results (default: results/).")
    args = parser.parse_args()
    result = run(args.repeats)
    print(write(result, args.out))
    if not all(r["same"] for r in result["kernels"].values()):
        sys.exit("a kernel's result differs from its CPU reference")


if __name__ == "__main__":
    main()
