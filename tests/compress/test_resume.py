"""A run killed mid-way and resumed ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from pbd_deploy.compress.config import BlockDropConfig
from pbd_deploy.compress.pbd import compress_model_dir
from pbd_deploy.errors import PbdError

OPTIONS = {"drop": 2, "epochs": 2, "calib_fraction": 1.0, "criterion": "loss", "seed": 7}
ARGS = ["--drop", "2", "--epochs", "2", "--calib-fraction", "1.0", "--criterion", "loss"]
ARGS += ["--seed", "7"]


def start(model_dir, data, out, *extra):
    cmd = [sys.executable, "-m", "pbd_deploy", "compress", str(model_dir), "--data", str(data)]
    # Every run in its own process with the same thread count: float results depend on it,
    # and the test process's count may have been changed by earlier tests. Bit-identity is
    # claimed only for this: the same code on one machine at one thread count (OMP_NUM_THREADS=1).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*cmd, "--out", str(out), *ARGS, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def kill_when(proc, state_file, reached, timeout=600):
    """SIGKILL `proc` as soon as its saved state satisfies `reached`."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file():
            try:
                state = torch.load(state_file, weights_only=True)
            except Exception:  # replaced while reading: try again
                state = None
            if state is not None and reached(state):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return state
        time.sleep(0.05)
    raise AssertionError(f"never reached the kill point: {proc.communicate()[0][-2000:]}")


def scored(state):  # killed after a scoring pass, before any epoch of that iteration
    pending = state["pending"]
    return pending is not None and "current" not in pending


def mid_recovery_of_second_iteration(state):
    pending = state["pending"]
    return len(state["iterations"]) == 1 and pending is not None and pending.get("epoch") == 1


def finish(proc):
    output = proc.communicate()[0].decode()
    assert proc.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_killed_twice_and_resumed_equals_uninterrupted(tiny_model_dir, synth_data, tmp_path):
    reference = tmp_path / "reference"
    finish(start(tiny_model_dir, synth_data, reference))

    out = tmp_path / "out"
    state_file = tmp_path / "out.pbd-state.pt"
    kill_when(start(tiny_model_dir, synth_data, out), state_file, scored)
    assert not out.exists()  # nothing half-written
    second = start(tiny_model_dir, synth_data, out, "--resume")
    kill_when(second, state_file, mid_recovery_of_second_iteration)
    finish(start(tiny_model_dir, synth_data, out, "--resume"))
    assert not state_file.exists()  # removed once the run finished
    expected = load_file(str(reference / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    kept = [
        json.loads((d / "config.json").read_text())["backbone"]["block_indices"]
        for d in (reference, out)
    ]
    assert kept[0] == kept[1] and len(kept[0]) == 2


def test_resume_refuses_other_options_and_missing_state(tiny_model_dir, synth_data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PbdError, match="no saved state"):
        compress_model_dir(tiny_model_dir, synth_data, out, BlockDropConfig(drop=1), resume=True)
    state_file = tmp_path / "out.pbd-state.pt"
    proc = start(tiny_model_dir, synth_data, out)
    kill_when(proc, state_file, lambda s: s["baseline"] is not None)
    other = BlockDropConfig(**{**OPTIONS, "epochs": 3})
    with pytest.raises(PbdError, match=r"other options \(epochs: 2 -> 3\)"):
        compress_model_dir(tiny_model_dir, synth_data, out, other, resume=True)
    with pytest.raises(PbdError, match="pass --resume to continue"):
        compress_model_dir(tiny_model_dir, synth_data, out, BlockDropConfig(**OPTIONS))
