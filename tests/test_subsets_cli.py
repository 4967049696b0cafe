"""`--subsets` on every command that reads splits: the same videos under OpenTAD's names,
the mapping recorded with the result, and every bad mapping a one-line error (exit 2)."""

import json
import shutil

import pytest

from pbd_deploy.core.annotations import load_annotations
from tests.export.helpers import deployed, tiny_model_dir
from tests.test_cli import assert_one_line_error, run

# OpenTAD's THUMOS14 naming: the videos we train and select on are "training", the test
# videos "validation".
OPENTAD_NAMES = {"training": "training", "validation": "training", "testing": "validation"}


@pytest.fixture(scope="module")
def opentad_data(synth_data, tmp_path_factory):
    """The synthetic dataset with its subsets renamed as OpenTAD's THUMOS14 file names them."""
    out = tmp_path_factory.mktemp("opentad") / "data"
    shutil.copytree(synth_data, out)
    path = out / "annotations.json"
    ann = json.loads(path.read_text())
    for video in ann["database"].values():
        video["subset"] = OPENTAD_NAMES[video["subset"]]
    path.write_text(json.dumps(ann))
    return out


@pytest.fixture(scope="module")
def model_dir(synth_data, tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("subsets") / "model", synth_data, seed=3)


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_splits_are_the_same_videos(synth_data, opentad_data):
    ours = load_annotations(synth_data / "annotations.json")
    renamed = load_annotations(opentad_data / "annotations.json", subsets="opentad-thumos")
    test = [v.video_id for v in ours.split("test")]
    assert [v.video_id for v in renamed.split("test")] == test and len(test) == 3
    train_and_val = sorted(v.video_id for r in ("train", "val") for v in renamed.split(r))
    assert train_and_val == sorted(v.video_id for r in ("train", "val") for v in ours.split(r))


def test_eval_of_predictions_model_dir_and_onnx(
    synth_data, opentad_data, model_dir, tmp_path, tmp_path_factory
):
    preds = tmp_path / "preds.json"
    assert run("eval", model_dir, "--data", synth_data, "--save-predictions", preds).exit_code == 0
    onnx = deployed(tmp_path_factory, synth_data) / "model.onnx"
    for model, option, name in [
        (preds, "--annotations", "annotations.json"),
        (model_dir, "--data", ""),
        (onnx, "--data", ""),
    ]:
        want = _json(run("eval", model, option, synth_data / name, "--json"))
        renamed = ["eval", model, option, opentad_data / name, "--json"]
        assert _json(run(*renamed, "--subsets", "opentad-thumos")) == want, model
        # Under the default names the renamed file's test videos would be called val.
        assert _json(run(*renamed, "--split", "val")) == want, model


def test_train_and_compress_record_the_mapping(opentad_data, model_dir, tmp_path):
    out = tmp_path / "trained"
    result = run("train", "--data", opentad_data, "--model", model_dir, "--out", out,
                 "--epochs", 1, "--subsets", "opentad-thumos")  # fmt: skip
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "config.json").read_text())["history"][-1]
    assert entry["stage"] == "train" and entry["config"]["subsets"] == "opentad-thumos"
    small = tmp_path / "small"
    result = run("compress", out, "--data", opentad_data, "--out", small, "--drop-indices", 1,
                 "--epochs", 0, "--subsets", "training=train+val,validation=test")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((small / "report.json").read_text())
    assert report["config"]["subsets"] == "training=train+val,validation=test"


def test_export_records_the_mapping(opentad_data, model_dir, tmp_path):
    out = tmp_path / "deploy"
    result = run("export", model_dir, "--out", out, "--data", opentad_data,
                 "--subsets", "opentad-thumos")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["export_config"]["subsets"] == "opentad-thumos"


@pytest.mark.parametrize(
    "command, subsets, message",
    [
        ("train", "thumos", "unknown --subsets preset 'thumos'; use default, opentad-thumos"),
        ("compress", "training=dev", "--subsets training=dev: unknown role 'dev'"),
        ("prune", "=train", "--subsets: '=train' is not SUBSET=ROLE"),
        ("export", "a=val,b=train+val", "--subsets maps 'a' to val and 'b' to train+val"),
        ("eval", "training=train,Training=val", "--subsets maps subset 'Training' twice"),
    ],
)
def test_bad_mappings_fail_before_any_work(
    command, subsets, message, synth_data, model_dir, tmp_path
):
    out = ["--out", tmp_path / "out"]
    args = {
        "train": ["train", "--data", synth_data, *out],
        "compress": ["compress", model_dir, "--data", synth_data, *out],
        "prune": ["prune", model_dir, "--data", synth_data, "--heads", 1, *out],
        "export": ["export", model_dir, *out],
        "eval": ["eval", model_dir, "--data", synth_data],
    }[command]
    assert_one_line_error(run(*args, "--subsets", subsets), message)
    assert not list(tmp_path.iterdir())


def test_a_subset_the_mapping_leaves_out(synth_data, model_dir, tmp_path):
    # The synthetic data has a "testing" subset, which opentad-thumos does not name.
    result = run("eval", model_dir, "--data", synth_data, "--subsets", "opentad-thumos")
    assert_one_line_error(
        result,
        "unknown subset 'testing' (expected training/validation under --subsets opentad-thumos)",
        "or map 'testing' with --subsets SUBSET=ROLE,...",
    )


def test_a_role_the_mapping_leaves_empty(opentad_data, tmp_path):
    result = run("train", "--data", opentad_data, "--out", tmp_path / "out", "--epochs", 1,
                 "--subsets", "training=train,validation=test")  # fmt: skip
    assert_one_line_error(
        result,
        "no videos in split 'val' under --subsets training=train,validation=test",
        "SUBSET=train+val",
    )
    assert not list(tmp_path.iterdir())
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"results": {}}))
    result = run("eval", preds, "--annotations", opentad_data / "annotations.json",
                 "--subsets", "training=train+val,validation=none")  # fmt: skip
    assert_one_line_error(result, "no videos in split 'test' under --subsets")
