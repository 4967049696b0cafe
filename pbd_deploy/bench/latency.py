"""The latency harness: warm up, then time every model side by side, interleaved.

Models are alternated call by call (round r times model 1, 2, ... before round r+1), so
load from other processes on a shared machine and clock drift hit every model alike; the
comparison uses medians. CPU calls are timed with perf_counter at a fixed thread count;
torch GPU calls with CUDA events recorded on the runner's stream; onnxruntime and TensorRT
calls with perf_counter too, as they return only once their outputs are back on the host.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from pbd_deploy.bench.runners import Runner


def time_once(runner: Runner) -> float:
    """Seconds of one call of `runner` (GPU: between CUDA events around the call)."""
    if runner.timer == "cuda_events":
        import torch

        stream = runner.stream or torch.cuda.current_stream()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record(stream)
        runner.call()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    runner.call()
    return time.perf_counter() - start


def warm_up(runners: list[Runner], calls: int) -> None:
    for runner in runners:
        for _ in range(calls):
            time_once(runner)


def measure(runners: list[Runner], iters: int, progress=None) -> list[list[float]]:
    """`iters` interleaved rounds; per runner the list of seconds per call."""
    samples = [[] for _ in runners]
    for done in range(1, iters + 1):
        for runner, out in zip(runners, samples):
            out.append(time_once(runner))
        if progress:
            progress(f"bench {runners[0].backend}", done, iters, ms=1e3 * samples[0][-1])
    return samples


def summarize(seconds: list[float]) -> dict:
    """Latency statistics in milliseconds (percentiles interpolate linearly)."""
    ms = 1e3 * np.asarray(seconds)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "iters": len(ms),
    }


def bare_loop(runner: Runner, iters: int) -> float:
    """Mean seconds per call of a loop with no per-call bookkeeping at all."""
    sync = lambda: None  # noqa: E731 - perf_counter runners return when their work is done
    if runner.timer == "cuda_events":
        import torch

        sync = torch.cuda.synchronize
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        runner.call()
    sync()
    return (time.perf_counter() - start) / iters


def harness_overhead(runner: Runner, iters: int, rounds: int = 5, progress=None) -> dict:
    """What the harness adds, against a bare loop, alternating the two `rounds` times.

    `latency_overhead` compares the latency the harness reports (mean of its samples)
    with the bare loop's mean; `wall_overhead` also charges the harness's bookkeeping
    (timers, lists, progress callback) by timing its whole loop from outside.
    """
    bare, reported, wall = [], [], []
    for _ in range(rounds):
        bare.append(bare_loop(runner, iters))
        start = time.perf_counter()
        samples = measure([runner], iters, progress)[0]
        wall.append((time.perf_counter() - start) / iters)
        reported.append(statistics.fmean(samples))
    b = statistics.median(bare)
    return {
        "bare_ms": 1e3 * b,
        "harness_ms": 1e3 * statistics.median(reported),
        "harness_wall_ms": 1e3 * statistics.median(wall),
        "latency_overhead": statistics.median(reported) / b - 1,
        "wall_overhead": statistics.median(wall) / b - 1,
        "iters": iters,
        "rounds": rounds,
    }
