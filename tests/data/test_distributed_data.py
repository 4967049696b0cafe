"""torchrun with 2 CPU processes (gloo): each rank decodes only its own videos; eval gathers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import save_model
from tests.conftest import tiny_config

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
HELPER = str(Path(__file__).with_name("rank_reads.py"))


@pytest.fixture(scope="module")
def tiny_model_dir(synth_data, tmp_path_factory):
    torch.manual_seed(5)
    classes = load_annotations(synth_data / "annotations.json").class_names
    return save_model(Detector(tiny_config(classes)), tmp_path_factory.mktemp("m") / "base")


def _run(launcher, log_dir, *args):
    log_dir.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [*launcher, HELPER, str(log_dir), *map(str, args)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logs = sorted(log_dir.glob("rank*.json"))
    reads = [set(json.loads(log.read_text())) for log in logs]
    return done.stdout, reads


def _split(data, role):
    return {v.video_id for v in load_annotations(data / "annotations.json").split(role)}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "compress"])
def test_ranks_read_disjoint_videos(synth_data, tiny_model_dir, tmp_path, command):
    out = tmp_path / "out"
    if command == "train":
        args = ["train", "--data", synth_data, "--out", out, "--epochs", "1", "--batch-size", "2"]
    else:
        args = ["compress", tiny_model_dir, "--data", synth_data, "--out", out,
                "--drop-indices", "1", "--epochs", "1", "--batch-size", "2"]  # fmt: skip
    _, (first, second) = _run(TORCHRUN, tmp_path / "log", *args)
    assert first and second and not first & second  # every video decoded by one rank only
    train, val = _split(synth_data, "train"), _split(synth_data, "val")
    assert (first | second) == train | val


@pytest.mark.slow
def test_eval_under_torchrun_gives_the_single_process_map(synth_data, tiny_model_dir, tmp_path):
    args = ["eval", tiny_model_dir, "--data", synth_data, "--split", "test", "--json"]
    single, _ = _run([sys.executable], tmp_path / "one", *args)
    double, (first, second) = _run(TORCHRUN, tmp_path / "two", *args)
    assert first and second and not first & second
    expected = json.loads(single.splitlines()[-1])
    for line in double.splitlines():  # both ranks print the whole split's result
        assert json.loads(line) == expected
