"""`pbd-deploy bench MODEL...`: latency, throughput, memory, MACs and energy, side by side."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from pbd_deploy.bench.config import BenchConfig
from pbd_deploy.bench.latency import measure, summarize, time_once, warm_up
from pbd_deploy.bench.machine import describe_machine
from pbd_deploy.bench.memory import peak_memory
from pbd_deploy.bench.power import power_monitor
from pbd_deploy.bench.runners import Runner, make_runner
from pbd_deploy.bench.sources import check_same_inputs, load_source
from pbd_deploy.bench.tegrastats import nvpmodel_mode
from pbd_deploy.errors import PbdError

log = logging.getLogger(__name__)


def run_bench(models: list[str | Path], config: BenchConfig, progress=None) -> dict:
    """Benchmark `models` on every backend of `config`; the first model is the baseline.

    Returns a JSON-ready dict: {"config", "machine", "rows": one per (backend, model)}, each
    row with latency (ms), throughput, peak memory, MACs, params, and against the baseline
    of its backend: speedup (p50 latency ratio), ideal speedup (MACs ratio), efficiency.
    """
    if not models:
        raise PbdError("give at least one model (a model directory, an .onnx or an .engine)")
    try:
        from pbd_deploy.bench.gemm import torch_threads
    except ImportError:  # a deploy install without torch: ORT and TensorRT rows only
        return _run(models, config, progress)
    with torch_threads(config.threads):
        return _run(models, config, progress)


def _run(models: list[str | Path], config: BenchConfig, progress) -> dict:
    sources = [load_source(m, config) for m in models]
    check_same_inputs(sources)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pbd-bench-") as workdir:
        for backend in config.backends:
            runners = [make_runner(s, backend, config, Path(workdir)) for s in sources]
            check_same_inputs(sources)  # .onnx / .engine shapes are known only now
            rows += _bench_backend(runners, config, progress)
    return {"config": config.to_dict(), "machine": describe_machine(config.device), "rows": rows}


def _bench_backend(runners: list[Runner], config: BenchConfig, progress) -> list[dict]:
    warm_up(runners, config.warmup)
    samples = measure(runners, config.iters, progress)
    rows = [_row(r, s, config) for r, s in zip(runners, samples)]
    for row, runner in zip(rows, runners):
        row["memory"] = peak_memory(runner.call, runner.device, runner.backend == "torch")
    monitor = power_monitor() if config.power else None
    if monitor is not None:
        for row, runner in zip(rows, runners):
            row["power"] = _energy_pass(runner, monitor, config)
    _compare(rows)
    return rows


def _row(runner: Runner, seconds: list[float], config: BenchConfig) -> dict:
    src = runner.source
    stats = summarize(seconds)
    windows_per_s = config.batch / (stats["mean_ms"] / 1e3)
    return {
        "model": runner.label,
        "path": str(src.path),
        "backend": runner.backend,
        "device": runner.device,
        "input": list(src.shape),
        "timer": runner.timer,
        "latency": stats,
        "samples_ms": [1e3 * t for t in seconds],  # call by call, in round order
        "windows_per_s": windows_per_s,
        "video_s_per_s": windows_per_s * src.window_seconds if src.window_seconds else None,
        "macs": src.macs,
        "params": src.params,
        **({"runner": runner.info} if runner.info else {}),
    }


def _energy_pass(runner: Runner, monitor, config: BenchConfig) -> dict:
    """A contiguous run of one model while power is sampled (interleaving would mix them)."""
    with monitor:
        time.sleep(2 * monitor.interval_ms / 1e3)  # a sample before the first call
        start = time.monotonic()
        for _ in range(config.iters):
            time_once(runner)
        end = time.monotonic()
        time.sleep(2 * monitor.interval_ms / 1e3)
    energy = monitor.energy(start, end) or {}
    windows = config.iters * config.batch
    return {
        **energy,
        "joules_per_window": energy["joules"] / windows if energy else None,
        "clocks": monitor.clocks(),
        "nvpmodel": nvpmodel_mode(),
    }


def _compare(rows: list[dict]) -> None:
    """Speedup, ideal speedup and efficiency of every row against the first (the baseline)."""
    base = rows[0]
    for row in rows:
        speedup = base["latency"]["p50_ms"] / row["latency"]["p50_ms"]
        ideal = base["macs"] / row["macs"] if base["macs"] and row["macs"] else None
        row["speedup"] = speedup
        row["ideal_speedup"] = ideal
        row["efficiency"] = speedup / ideal if ideal else None
