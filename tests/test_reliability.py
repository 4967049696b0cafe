"""What every command promises about its output: shareable files, one writer at a time."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.core.atomic import lock_path
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import save_model
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def model_dir(synth_data, tmp_path_factory):
    torch.manual_seed(5)
    classes = load_annotations(synth_data / "annotations.json").class_names
    return save_model(Detector(tiny_config(classes)), tmp_path_factory.mktemp("m") / "base")


def test_model_files_are_readable_by_other_users(tmp_path):
    old = os.umask(0o022)
    try:
        out = save_model(Detector(tiny_config()), tmp_path / "shared")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for f in out.iterdir():  # model.safetensors included (safetensors creates it 0600)
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    if os.geteuid() == 0 and shutil.which("cat"):  # really read it as another user
        public = Path(tempfile.mkdtemp())  # under /tmp, outside pytest's owner-only folder
        try:
            public.chmod(0o755)
            shutil.copytree(out, public / "m", copy_function=shutil.copy)  # keeps the modes
            weights = public / "m" / "model.safetensors"
            read = subprocess.run(["cat", str(weights)], user=65534, capture_output=True)
            assert read.returncode == 0 and read.stdout == weights.read_bytes(), read.stderr
        finally:
            shutil.rmtree(public)


_HOLD = textwrap.dedent(
    """
    import sys, time
    from pbd_deploy.core.atomic import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def test_a_second_writer_of_the_same_output_is_refused(model_dir, synth_data, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    commands = {
        "train": ["train", "--data", synth_data, "--model", model_dir, "--out", out, "--epochs", 1],
        "compress": ["compress", model_dir, "--data", synth_data, "--out", out, "--epochs", 0],
        "export": ["export", model_dir, "--out", out],
    }
    try:
        assert holder.stdout.readline().strip() == "locked"
        for name, args in commands.items():
            result = CliRunner().invoke(main, [str(a) for a in args])
            lines = result.output.strip().splitlines()
            assert result.exit_code == 2, (name, result.output)
            assert len(lines) == 1 and "is being written by another run" in lines[0], name
            assert f"pid {holder.pid}" in lines[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == [lock_path(out).name]
    finally:
        holder.kill()
        holder.wait()
