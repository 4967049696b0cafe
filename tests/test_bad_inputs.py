"""The bad-input table: every command refuses bad input in one line, exit 2, having written nothing.

Each case runs the real command line (in-process) on inputs that are valid except for one
thing, and checks: exit code 2; exactly one line on stderr, starting with "error:" and naming
the problem; no traceback; and no file created, changed or removed anywhere it could write
(the output's folder, the dataset, the model directory, the export).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pbd_deploy.cli import main
from tests.export.helpers import deployed, tiny_model_dir


class Opaque:
    """A pickled object that torch's weights-only loader refuses."""


@pytest.fixture(scope="module")
def inputs(synth_data, tmp_path_factory):
    """{name: path}: a good dataset, model directory and export, and a folder of bad files."""
    root = tmp_path_factory.mktemp("inputs")
    model = tiny_model_dir(root / "model", synth_data)
    deploy = deployed(tmp_path_factory, synth_data)
    bad = root / "bad"
    bad.mkdir()
    ann = json.loads((synth_data / "annotations.json").read_text())["database"]
    video, label = next(
        (v, e["annotations"][0]["label"]) for v, e in ann.items() if e["annotations"]
    )

    def preds(name, **entry):
        row = {"label": label, "segment": [1.0, 2.0], "score": 0.5, **entry}
        video_id = row.pop("video", video)
        results = {"version": "VERSION 1.3", "results": {video_id: [row]}, "external_data": {}}
        (bad / name).write_text(json.dumps(results))

    preds("good.json")
    preds("inverted.json", segment=[3.0, 2.0])
    preds("empty_segment.json", segment=[2.0, 2.0])
    preds("nan_score.json", score=math.nan)
    preds("big_score.json", score=1.5)
    preds("negative_score.json", score=-0.1)
    preds("unknown_label.json", label="NoSuchAction")
    preds("unknown_video.json", video="no_such_video")
    (bad / "not_json.json").write_text("{not json")
    (bad / "notes.txt").write_text("hello")

    torch.save({"w": torch.zeros(2), "extra": Opaque()}, bad / "pickled.pth")
    (bad / "garbage.pth").write_bytes(b"\x00not a checkpoint at all")
    (bad / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    broken_model = bad / "broken_model"
    shutil.copytree(model, broken_model)
    (broken_model / "config.json").write_text("{")
    (bad / "stranger.onnx").write_bytes((deploy / "model.onnx").read_bytes())
    return {
        "data": synth_data,
        "ann": synth_data / "annotations.json",
        "model": model,
        "deploy": deploy,
        "onnx": deploy / "model.onnx",
        "video": next((synth_data / "videos").glob("*.mp4")),
        "bad": bad,
    }


# (id, command line with {placeholders}, a fragment the one error line must contain)
CASES = [
    # synth
    ("synth-videos", "synth {out} --videos 0", "videos"),
    ("synth-classes", "synth {out} --classes 0", "classes"),
    ("synth-fps", "synth {out} --fps 0", "fps"),
    ("synth-durations", "synth {out} --min-duration 9 --max-duration 5", "duration"),
    ("synth-exists", "synth {model}", "already exists"),
    ("synth-like", "synth {out} --like {bad}/missing.json", "missing.json"),
    # train
    ("train-no-data", "train --data {bad}/nodata --model videomae-tiny --out {out}", "nodata"),
    ("train-model", "train --data {data} --model no-such-model --out {out}", "no-such-model"),
    ("train-epochs", "train --data {data} --model {model} --out {out} --epochs 0", "--epochs"),
    ("train-lr", "train --data {data} --model {model} --out {out} --lr -1", "--lr"),
    (
        "train-batch",
        "train --data {data} --model {model} --out {out} --batch-size 0",
        "--batch-size",
    ),
    ("train-device", "train --data {data} --model {model} --out {out} --device cuda", "CUDA"),
    ("train-precision", "train --data {data} --model {model} --out {out} --precision fp16", "fp16"),
    ("train-workers", "train --data {data} --model {model} --out {out} --workers -1", "workers"),
    ("train-resume", "train --data {data} --model {model} --out {out} --resume", "no saved state"),
    ("train-exists", "train --data {data} --model {model} --out {model}", "already exists"),
    # eval
    ("eval-needs-data", "eval {model}", "--data"),
    ("eval-needs-annotations", "eval {bad}/good.json", "--annotations"),
    ("eval-inverted", "eval {bad}/inverted.json --annotations {ann}", "not before its end"),
    ("eval-empty-segment", "eval {bad}/empty_segment.json --annotations {ann}", "not before"),
    ("eval-nan-score", "eval {bad}/nan_score.json --annotations {ann}", "score"),
    ("eval-big-score", "eval {bad}/big_score.json --annotations {ann}", "[0, 1]"),
    ("eval-negative-score", "eval {bad}/negative_score.json --annotations {ann}", "[0, 1]"),
    ("eval-label", "eval {bad}/unknown_label.json --annotations {ann}", "NoSuchAction"),
    ("eval-video", "eval {bad}/unknown_video.json --annotations {ann}", "no_such_video"),
    ("eval-not-json", "eval {bad}/not_json.json --annotations {ann}", "not valid JSON"),
    ("eval-what", "eval {bad}/notes.txt --data {data}", "cannot evaluate"),
    ("eval-split", "eval {model} --data {data} --split holdout", "holdout"),
    ("eval-onnx-data", "eval {onnx} --data {bad}/nodata", "nodata"),
    (
        "eval-save-folder",
        "eval {model} --data {data} --save-predictions {bad}/no/p.json",
        "does not exist",
    ),
    # info, init, convert
    ("info-missing", "info {bad}/nodir", "does not exist"),
    ("info-broken", "info {bad}/broken_model", "not valid JSON"),
    ("init-model", "init no-such-model --out {out} --num-classes 3", "no-such-model"),
    ("init-classes", "init videomae-tiny --out {out} --num-classes 0", "classes"),
    (
        "convert-pickle",
        "convert {bad}/pickled.pth --model videomae-tiny --out {out} --num-classes 3",
        "weights-only loader refuses",
    ),
    (
        "convert-garbage",
        "convert {bad}/garbage.pth --model videomae-tiny --out {out} --num-classes 3",
        "garbage.pth",
    ),
    (
        "convert-missing",
        "convert {bad}/none.pth --model videomae-tiny --out {out} --num-classes 3",
        "does not exist",
    ),
    # compress
    (
        "compress-lora",
        "compress {model} --data {data} --out {out} --lora-targets attn.nope",
        "attn.nope",
    ),
    (
        "compress-macs",
        "compress {model} --data {data} --out {out} --target-macs 1.5",
        "--target-macs",
    ),
    ("compress-drop", "compress {model} --data {data} --out {out} --drop 0", "--drop"),
    (
        "compress-indices",
        "compress {model} --data {data} --out {out} --drop-indices 1,1",
        "repeated",
    ),
    ("compress-too-deep", "compress {model} --data {data} --out {out} --drop 9", "block"),
    (
        "compress-calib",
        "compress {model} --data {data} --out {out} --calib-fraction 0",
        "--calib-fraction",
    ),
    ("compress-model", "compress {bad}/nodir --data {data} --out {out}", "nodir"),
    ("compress-resume", "compress {model} --data {data} --out {out} --resume", "no saved state"),
    # export, build-engine, infer
    ("export-opset", "export {model} --out {out} --opset 11", "opset"),
    ("export-batch", "export {model} --out {out} --batch 0", "batch"),
    ("export-window", "export {model} --out {out} --window 7", "window"),
    ("export-int8", "export {model} --out {out} --int8", "--calib"),
    ("export-model", "export {bad}/nodir --out {out}", "nodir"),
    ("export-exists", "export {model} --out {model}", "already exists"),
    ("build-engine-missing", "build-engine {bad}/none.onnx", "none.onnx"),
    ("infer-video", "infer {onnx} {bad}/none.mp4", "none.mp4"),
    ("infer-broken-video", "infer {onnx} {bad}/broken.mp4", "broken.mp4"),
    ("infer-stranger", "infer {bad}/stranger.onnx {video}", "stranger.onnx"),
    ("infer-json-folder", "infer {onnx} {video} --json {bad}/no/dets.json", "does not exist"),
    # bench, quickstart, prune
    ("bench-missing", "bench models {bad}/nodir", "nodir"),
    ("bench-backend", "bench models {model} --backend abacus", "abacus"),
    ("bench-iters", "bench models {model} --iters 0", "iters"),
    ("quickstart-exists", "quickstart --out {model}", "already exists"),
    ("quickstart-epochs", "quickstart --out {out} --epochs 0", "epochs"),
    ("prune-budget", "prune {model} --data {data} --out {out}", "budget"),
]


def _snapshot(*roots: Path) -> dict:
    files = {}
    for root in roots:
        for folder, dirs, names in os.walk(root):
            for name in dirs + names:
                path = Path(folder, name)
                st = path.lstat()
                files[str(path)] = (st.st_size, st.st_mtime_ns)
    return files


@pytest.mark.parametrize("args,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line(inputs, tmp_path, args, fragment):
    values = {k: str(v) for k, v in inputs.items()} | {"out": str(tmp_path / "out")}
    argv = [a.format(**values) for a in args.split()]
    roots = [tmp_path, inputs["bad"].parent, inputs["data"], inputs["deploy"]]
    before = _snapshot(*roots)
    result = CliRunner().invoke(main, argv)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (argv, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert fragment in lines[0], lines[0]
    assert _snapshot(*roots) == before, "something was written"


def test_the_table_covers_every_command():
    covered = {c[1].split()[0] for c in CASES}
    assert covered == set(main.commands), set(main.commands) ^ covered
    assert len(CASES) >= 40
