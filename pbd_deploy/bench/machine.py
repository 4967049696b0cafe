"""The machine a measurement ran on, recorded beside every bench result and benchmark.

Hardware and library versions only (CPU model, cores, GPU, thread counts): results are
compared across machines by what they are, never by who ran them. torch is optional here,
so a torch-free deploy install can describe its machine too.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess


def describe_machine(device: str = "cpu") -> dict:
    """CPU model, cores, Python, torch / onnxruntime versions, the GPU and, on CUDA, its clocks.

    Args:
        device: "cuda" adds the SM / memory clocks nvidia-smi reports (they set GPU latency).
    """
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": None,
        "torch_threads": None,
        "gpu": None,
        "onnxruntime": _version("onnxruntime"),
    }
    if importlib.util.find_spec("torch") is not None:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if device == "cuda":
        info["gpu_clocks"] = nvidia_smi_clocks()
    return info


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def nvidia_smi_clocks() -> str | None:
    """SM / memory clocks (current and max) and power as nvidia-smi reports them, if present."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = "clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.draw"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return f"{query}: {out.stdout.strip()}" if out.returncode == 0 else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
