"""benchmarks/gpu_suite.sh: valid shell; --dry-run lists its steps without a GPU."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_suite.sh"


def test_gpu_suite_dry_run_lists_its_steps():
    assert subprocess.run(["sh", "-n", str(SCRIPT)]).returncode == 0
    run = subprocess.run(["sh", str(SCRIPT), "--dry-run"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    steps = [line for line in run.stdout.splitlines() if line.startswith("== [")]
    assert any("-m gpu or trt tests" in s and "pytest" in s for s in steps), run.stdout
    assert any("gemm_sweep.py --device cuda" in s for s in steps), run.stdout
    assert any("depth_vs_width.py --device cuda" in s for s in steps), run.stdout
    assert any("bench gemm" in s and "--backend trt" in s for s in steps), run.stdout
    limits = [int(s.split("[")[1].split(" s]")[0]) for s in steps]
    assert sum(limits) + 30 <= 8 * 60  # every step's time limit, and 30 s for start-up
    assert not list((SCRIPT.parent / "results").glob("gpu/*GPU-name*"))  # dry: writes nothing
    bad = subprocess.run(["sh", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr
