"""`pbd-deploy compress` on the command line: bad inputs are one line, before any work."""

import json
import shutil

import pytest

from tests.test_cli import assert_one_line_error, run


@pytest.mark.parametrize(
    "args, message",
    [
        (["--drop", "4"], "--drop 4 is more than the 3 blocks"),
        (["--target-macs", "0.01"], "cannot be reached"),
        (["--drop-indices", "1,7"], "--drop-indices [7] are not blocks"),
        (["--drop-indices", "1,1"], "repeated: [1]"),
        (["--drop-indices", "a,b"], "comma-separated integers"),
        (["--drop", "1", "--target-macs", "0.5"], "give only one budget"),
    ],
)
def test_bad_budgets_are_one_line_errors(tiny_model_dir, synth_data, tmp_path, args, message):
    out = tmp_path / "out"
    result = run("compress", tiny_model_dir, "--data", synth_data, "--out", out, *args)
    assert_one_line_error(result, message)
    assert not out.exists() and not list(tmp_path.iterdir())  # no output, no state file


def test_data_without_a_training_split(tiny_model_dir, synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    ann = json.loads((data / "annotations.json").read_text())
    for video in ann["database"].values():
        video["subset"] = "testing"
    (data / "annotations.json").write_text(json.dumps(ann))
    result = run("compress", tiny_model_dir, "--data", data, "--out", tmp_path / "out")
    assert_one_line_error(result, "no videos in split 'train'")
    assert not (tmp_path / "out").exists()


def test_compress_and_info(tiny_model_dir, synth_data, tmp_path):
    out = tmp_path / "small"
    args = ["--drop-indices", "2", "--epochs", "0", "--data", synth_data, "--out", out]
    result = run("compress", tiny_model_dir, *args)
    assert result.exit_code == 0, result.output
    assert "kept blocks [0, 1, 3]" in result.output
    shown = run("info", out)
    assert shown.exit_code == 0 and "compress" in shown.output and "dropped [2]" in shown.output
