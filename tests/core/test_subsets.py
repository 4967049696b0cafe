"""`--subsets`: which split role each annotation subset feeds, checked against OpenTAD's own
dataset classes (tests/fixtures/opentad/subsets.json, written by make_subsets.py)."""

import json
from pathlib import Path

import pytest

from pbd_deploy.core.annotations import load_annotations, subset_roles
from pbd_deploy.errors import PbdError

FIXTURES = Path(__file__).parents[1] / "fixtures"
OPENTAD = json.loads((FIXTURES / "opentad" / "subsets.json").read_text())


def _write(tmp_path, database, name="annotations.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"database": database}))
    return path


def _ids(videos) -> list[str]:
    return [v.video_id for v in videos]


def _video(subset, start=1.0):
    return {"subset": subset, "duration": 20.0,
            "annotations": [{"label": "Jump", "segment": [start, start + 2]}]}  # fmt: skip


@pytest.mark.parametrize("kind, preset", [("thumos", "opentad-thumos"), ("anet", "opentad-anet")])
def test_opentad_presets_select_what_opentad_selects(tmp_path, kind, preset):
    fixture = OPENTAD[kind]
    opentad = fixture["opentad"]
    ann = load_annotations(_write(tmp_path, fixture["database"]), subsets=preset)
    train, val, test = (_ids(ann.split(r)) for r in ("train", "val", "test"))
    # OpenTAD trains on its "training" subset and tests on "validation"; we hold part of
    # its training videos out for checkpoint selection instead of selecting on the test.
    assert sorted(train + val) == opentad["train"]
    assert test == opentad["test"]
    assert not set(train) & set(val) and not set(val) & set(test)
    assert len(val) == round(0.15 * len(opentad["train"]))
    # OpenTAD's own val dataset is its test videos: the difference this option fixes.
    assert opentad["val"] == opentad["test"]
    # Under the default names the same file would select checkpoints on the test videos.
    if kind == "thumos":
        default = load_annotations(_write(tmp_path, fixture["database"], "d.json"))
        assert _ids(default.split("val")) == opentad["test"]


def test_opentad_thumos_naming_gives_the_splits_of_the_official_file(tmp_path):
    # The official THUMOS14 file (Validation + Test) under the default names and the same
    # videos under OpenTAD's names with opentad-thumos give the same three splits.
    official = json.loads((FIXTURES / "thumos14.json").read_text())["database"]
    renamed = {"Validation": "training", "Test": "validation"}
    opentad = {k: {**v, "subset": renamed[v["subset"]]} for k, v in official.items()}
    a = load_annotations(FIXTURES / "thumos14.json", past_end="keep")
    b = load_annotations(_write(tmp_path, opentad), past_end="keep", subsets="opentad-thumos")
    for role in ("train", "val", "test"):
        assert _ids(a.split(role)) == _ids(b.split(role))
    assert [len(a.split(r)) for r in ("train", "val", "test")] == [170, 30, 212]


def test_explicit_pairs(tmp_path):
    db = {"a": _video("Training"), "b": _video("training"), "c": _video("dev"),
          "d": _video("eval"), "e": _video("extra")}  # fmt: skip
    path = _write(tmp_path, db)
    ann = load_annotations(path, subsets="training=train, DEV=val,eval=test,extra=none")
    assert (_ids(ann.split("train")), _ids(ann.split("val")), _ids(ann.split("test"))) == (
        ["a", "b"], ["c"], ["d"],
    )  # fmt: skip
    assert "e" in ann.videos  # a subset mapped to none is loaded, in no split
    # extra=train: two subsets may feed one role.
    ann = load_annotations(path, subsets="training=train,dev=val,eval=test,extra=train")
    assert _ids(ann.split("train")) == ["a", "b", "e"]


def test_train_plus_val_holds_out_by_a_stable_hash(tmp_path):
    db = {f"v{i:02d}": _video("pool") for i in range(20)} | {"t": _video("exam")}
    path = _write(tmp_path, db)
    ann = load_annotations(path, subsets="pool=train+val,exam=test")
    train, val = _ids(ann.split("train")), _ids(ann.split("val"))
    assert len(val) == 3 and sorted(train + val) == sorted(k for k in db if k != "t")
    # The same held-out videos as the THUMOS14 rule picks from the same pool by default.
    default = load_annotations(_write(tmp_path, {**db, "t": _video("testing")} | {
        k: _video("validation") for k in db if k != "t"}, "d.json"))  # fmt: skip
    assert _ids(default.split("val")) == val and _ids(default.split("train")) == train


def test_default_is_the_subset_names(tmp_path):
    assert subset_roles("default") == {
        "training": "train", "train": "train", "validation": "val", "val": "val",
        "testing": "test", "test": "test",
    }  # fmt: skip
    db = {"a": _video("training"), "b": _video("validation"), "c": _video("testing")}
    ann = load_annotations(_write(tmp_path, db))
    assert [_ids(ann.split(r)) for r in ("train", "val", "test")] == [["a"], ["b"], ["c"]]
    assert _ids(ann.split("validation")) == ["b"]  # subset names still name roles here


@pytest.mark.parametrize(
    "subsets, message",
    [
        ("thumos", "unknown --subsets preset 'thumos'; use default, opentad-thumos, opentad-anet"),
        ("", "unknown --subsets preset ''"),
        ("training=train,validation=dev", "--subsets validation=dev: unknown role 'dev'; use "
         "train, val, test, train+val, none"),
        ("training=train,,validation=test", "--subsets: '' is not SUBSET=ROLE"),
        ("=train", "--subsets: '=train' is not SUBSET=ROLE"),
        ("training=train,Training=val", "--subsets maps subset 'Training' twice"),
        ("training=train+val,validation=val", "--subsets maps 'validation' to val and "
         "'training' to train+val"),
    ],
)  # fmt: skip
def test_bad_mappings_are_one_line_errors(tmp_path, subsets, message):
    with pytest.raises(PbdError) as info:
        load_annotations(tmp_path / "not-read.json", subsets=subsets)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unmapped_subset_is_a_problem_of_the_file(tmp_path):
    db = OPENTAD["anet"]["database"]
    with pytest.raises(PbdError) as info:
        load_annotations(_write(tmp_path, db), subsets="opentad-thumos")
    message = str(info.value)
    assert "3 problems" in message and "\n" not in message
    assert (
        "v_anet0010: unknown subset 'testing' (expected training/validation under "
        "--subsets opentad-thumos)" in message
    )
    assert message.endswith("(fix the file or map 'testing' with --subsets SUBSET=ROLE,...)")


def test_empty_roles_name_the_mapping(tmp_path):
    path = _write(tmp_path, {"a": _video("training"), "b": _video("validation")})
    ann = load_annotations(path, subsets="training=train,validation=test")
    with pytest.raises(PbdError) as info:
        ann.split("val")
    assert str(info.value) == (
        "no videos in split 'val' under --subsets training=train,validation=test (subsets "
        "present: training, validation); map a subset to val with --subsets (or "
        "SUBSET=train+val to hold out 15% of a training subset)"
    )
    with pytest.raises(PbdError, match="unknown split 'validation' .*a split names a role"):
        ann.split("validation")
    none = load_annotations(path, subsets="training=train,validation=none")
    with pytest.raises(PbdError, match="no videos in split 'test' under --subsets"):
        none.split("test")
