"""The command line: help everywhere, one-line errors with exit 2, and a real subprocess run."""

import importlib
import json
import pkgutil
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import pbd_deploy
from pbd_deploy.cli import main
from pbd_deploy.models.complexity import count_macs
from pbd_deploy.models.io import load_model

COMMANDS = sorted(main.commands)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_every_module_imports():
    for info in pkgutil.walk_packages(pbd_deploy.__path__, "pbd_deploy."):
        importlib.import_module(info.name)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and f"pbd-deploy {command}" in result.output


def test_init_and_info_json(tmp_path):
    assert run("init", "videomae-tiny", "--out", tmp_path / "m", "--num-classes", 4).exit_code == 0
    result = run("info", tmp_path / "m", "--json")
    info = json.loads(result.output)
    assert info["depth"] == 12 and info["kept_blocks"] == list(range(12))
    model = load_model(tmp_path / "m")
    assert info["params"] == sum(p.numel() for p in model.parameters())
    macs = count_macs(model.config)  # checked against the closed form in test_complexity
    assert info["macs"] == macs["total"] and info["macs_head"] == macs["head"]
    assert info["history"][0]["stage"] == "init"
    table = run("info", tmp_path / "m")
    assert "kept blocks" in table.output and "MACs" in table.output
    assert_one_line_error(
        run("init", "videomae-tiny", "--out", tmp_path / "m", "--num-classes", 4),
        "already exists",
        "--force",
    )
    assert_one_line_error(
        run("init", "videomae-xl", "--out", tmp_path / "x", "--num-classes", 4), "unknown model"
    )


def copy_data(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    return data


def edit_annotations(data, change):
    path = data / "annotations.json"
    db = json.loads(path.read_text())
    change(db["database"])
    path.write_text(json.dumps(db))


def first(db):
    return db[sorted(db)[0]]


BAD_ANNOTATIONS = [
    (lambda db: first(db).pop("duration"), "missing key 'duration'"),
    (lambda db: first(db)["annotations"][0].update(segment=[5.0, 4.0]), ">= end"),
    (lambda db: first(db)["annotations"][0].update(segment=[1.0, 500.0]), "> duration"),
    (lambda db: first(db).update(subset="holdout"), "unknown subset"),
]


@pytest.mark.parametrize("change, message", BAD_ANNOTATIONS)
def test_annotation_problems_are_one_line_errors(synth_data, tmp_path, change, message):
    data = copy_data(synth_data, tmp_path)
    edit_annotations(data, change)
    result = run("train", "--data", data, "--out", tmp_path / "out", "--epochs", 1)
    assert_one_line_error(
        result,
        message,
        sorted(json.loads((synth_data / "annotations.json").read_text())["database"])[0],
    )
    assert not (tmp_path / "out").exists()


def test_malformed_json_and_empty_split(synth_data, tmp_path):
    data = copy_data(synth_data, tmp_path)
    (data / "annotations.json").write_text('{"database": {')
    assert_one_line_error(run("train", "--data", data, "--out", tmp_path / "o"), "JSON")
    data2 = tmp_path / "d2"
    shutil.copytree(synth_data, data2)
    edit_annotations(data2, lambda db: [v.update(subset="testing") for v in db.values()])
    assert_one_line_error(
        run("train", "--data", data2, "--out", tmp_path / "o", "--epochs", 1), "no videos in split"
    )


def test_missing_and_corrupt_videos(synth_data, tmp_path):
    data = copy_data(synth_data, tmp_path)
    victim = sorted((data / "videos").iterdir())[0]
    victim.write_bytes(b"\x00\x01 definitely not an mp4" * 50)
    result = run("train", "--data", data, "--out", tmp_path / "o", "--epochs", 1)
    assert_one_line_error(result, "cannot decode video", victim.name)
    victim.unlink()
    result = run("train", "--data", data, "--out", tmp_path / "o", "--epochs", 1)
    assert_one_line_error(result, "not found", victim.name)
    assert not (tmp_path / "o").exists()


def test_eval_scores_a_predictions_file(synth_data, tmp_path):
    db = json.loads((synth_data / "annotations.json").read_text())["database"]
    results = {
        vid: [
            {"label": a["label"], "segment": a["segment"], "score": 0.9} for a in v["annotations"]
        ]
        for vid, v in db.items()
        if v["subset"] == "testing"
    }
    (tmp_path / "p.json").write_text(json.dumps({"results": results}))
    result = run(
        "eval",
        tmp_path / "p.json",
        "--annotations",
        synth_data / "annotations.json",
        "--split",
        "test",
        "--json",
    )
    out = json.loads(result.output)
    assert out["thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert out["mAP"] == [1.0] * 5 and out["average_mAP"] == 1.0
    assert_one_line_error(run("eval", tmp_path / "p.json", "--split", "test"), "--annotations")
    assert_one_line_error(run("eval", tmp_path / "nope", "--data", synth_data), "does not exist")


@pytest.mark.slow
def test_real_subprocess_pipeline(tmp_path):
    """synth -> train -> eval -> info through the installed console script.

    Training fine-tunes a tiny 4-block model directory (`train --model DIR`): the same
    commands as with videomae-tiny, at a fraction of the cost.
    """
    from tests.export.helpers import tiny_model_dir

    exe = [sys.executable, "-m", "pbd_deploy"]
    data, base = tmp_path / "data", tmp_path / "base"

    def call(*args):
        return subprocess.run([*exe, *map(str, args)], capture_output=True, text=True, check=True)

    call("synth", data, "--videos", 3, "--classes", 2, "--seed", 3)
    start = tiny_model_dir(tmp_path / "start", data)
    call("train", "--data", data, "--model", start, "--out", base, "--epochs", 1)
    out = json.loads(call("eval", base, "--data", data, "--split", "test", "--json").stdout)
    assert len(out["mAP"]) == 5 and 0.0 <= out["average_mAP"] <= 1.0
    info = json.loads(call("info", base, "--json").stdout)
    assert [h["stage"] for h in info["history"]] == ["train"]
    failed = subprocess.run(
        [*exe, "train", "--data", data, "--out", base], capture_output=True, text=True
    )
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1
