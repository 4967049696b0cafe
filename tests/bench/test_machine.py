import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pbd_deploy.bench.machine import describe_machine


def _cpuinfo_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    pytest.skip("no model name in /proc/cpuinfo")


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="Linux only")
def test_describes_the_cpu_as_the_kernel_does():
    import torch

    info = describe_machine()
    assert info["cpu"] == _cpuinfo_model()
    assert info["cores"] == os.cpu_count()
    assert info["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads()
    assert "gpu_clocks" not in info  # only asked for on CUDA


def test_works_without_torch():
    code = (
        "import sys, json\nsys.modules['torch'] = None\n"
        "from pbd_deploy.bench.machine import describe_machine\n"
        "print(json.dumps(describe_machine()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["torch"] is None and info["cores"] == os.cpu_count()
