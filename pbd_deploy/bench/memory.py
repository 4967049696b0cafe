"""Peak memory of one inference: CUDA max allocated on the GPU, peak RSS on the CPU.

On the CPU the kernel's high-water mark (VmHWM) is reset through /proc/self/clear_refs
before the call, so the peak belongs to this call and not to whatever ran before.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path


def _status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_memory(call, device: str, torch_owned: bool = True) -> dict:
    """Run `call()` once and report its peak memory in MiB and how it was measured."""
    if device == "cuda":
        if not torch_owned:  # TensorRT / ORT-GPU allocate outside torch's allocator
            call()
            return {"peak_mb": None, "method": "not measured (memory outside torch)"}
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {
            "peak_mb": peak / 2**20,
            "added_mb": (peak - before) / 2**20,
            "method": "torch.cuda.max_memory_allocated",
        }
    before = _status_kb("VmRSS")
    if _reset_hwm():
        call()
        peak = _status_kb("VmHWM")
        method = "peak RSS of the process (VmHWM reset via /proc/self/clear_refs)"
    else:
        call()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        method = "peak RSS since the process started (ru_maxrss)"
    return {
        "peak_mb": peak / 1024,
        "added_mb": (peak - before) / 1024 if before else None,
        "method": method,
    }
