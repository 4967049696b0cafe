"""torchrun with 2 CPU processes (gloo): scoring split across ranks, DDP recovery."""

import json
import os
import subprocess
import sys

import pytest

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ARGS = ["--calib-fraction", "1.0", "--criterion", "mse"]


def compress(model_dir, data, out, launcher, *args):
    cmd = [*launcher, "-m", "pbd_deploy", "compress", str(model_dir), "--data", str(data)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cmd, "--out", str(out), *ARGS, *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_drop_the_same_blocks(tiny_model_dir, synth_data, tmp_path):
    args = ("--drop", "2", "--epochs", "0")
    single = compress(tiny_model_dir, synth_data, tmp_path / "one", [sys.executable], *args)
    double = compress(tiny_model_dir, synth_data, tmp_path / "two", TORCHRUN, *args)
    assert [r["dropped"] for r in double["iterations"]] == [
        r["dropped"] for r in single["iterations"]
    ]
    assert double["kept_blocks"] == single["kept_blocks"]
    for one, two in zip(single["iterations"], double["iterations"]):
        assert one["scores"].keys() == two["scores"].keys()  # each rank scored half the videos
        for block, score in one["scores"].items():
            assert abs(two["scores"][block] - score) <= 1e-6 * abs(score)


@pytest.mark.slow
def test_recovery_runs_under_ddp(tiny_model_dir, synth_data, tmp_path):
    report = compress(
        tiny_model_dir, synth_data, tmp_path / "ddp", TORCHRUN, "--drop", "1", "--epochs", "1"
    )
    (iteration,) = report["iterations"]
    assert len(iteration["epochs"]) == 1 and iteration["merge_error"] <= 1e-4
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert len(config["backbone"]["block_indices"]) == 3
