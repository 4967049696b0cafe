import json
import logging
from pathlib import Path

import pytest

from pbd_deploy.core.annotations import (
    Annotation,
    Annotations,
    VideoInfo,
    ground_truth,
    load_annotations,
)
from pbd_deploy.errors import PbdError

THUMOS = Path(__file__).parents[1] / "fixtures" / "thumos14.json"


@pytest.fixture(scope="module")
def thumos() -> Annotations:
    return load_annotations(THUMOS, past_end="keep")


def _write(tmp_path, database, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"database": database}))
    return path


def _video(subset="training", duration=10.0, segments=((1.0, 2.0),), label="Jump"):
    return {
        "subset": subset,
        "duration": duration,
        "annotations": [{"label": label, "segment": list(s)} for s in segments],
    }


def _error(path, **kwargs) -> str:
    with pytest.raises(PbdError) as info:
        load_annotations(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the real THUMOS14 file -------------------------------------------------------


def test_thumos_counts(thumos):
    assert len(thumos.videos) == 412
    assert len(thumos.class_names) == 20
    assert thumos.class_names == sorted(thumos.class_names)
    assert thumos.num_instances == 6365
    assert thumos.class_index()["BaseballPitch"] == 0
    assert all(v.fps in (24.0, 25.0, 29.97, 30.0) for v in thumos.videos.values())


def test_thumos_label_ids_match_sorted_class_names(thumos):
    # Checkpoints trained on this file index classes by its label_id field.
    raw = json.loads(THUMOS.read_text())["database"]
    index = thumos.class_index()
    for entry in raw.values():
        for ann in entry["annotations"]:
            assert index[ann["label"]] == ann["label_id"]


def test_thumos_splits(thumos):
    train, val, test = thumos.split("train"), thumos.split("val"), thumos.split("test")
    assert (len(train), len(val), len(test)) == (170, 30, 212)
    train_ids, val_ids = {v.video_id for v in train}, {v.video_id for v in val}
    assert not train_ids & val_ids
    assert all(v.subset == "Validation" for v in train + val)
    assert all(v.subset == "Test" for v in test)
    assert thumos.split("validation") == val and thumos.split("TESTING") == test


def test_thumos_splits_are_deterministic(thumos):
    again = load_annotations(THUMOS, past_end="keep")
    assert [v.video_id for v in again.split("val")] == [v.video_id for v in thumos.split("val")]
    cal = thumos.calibration_split(0.1)
    assert [v.video_id for v in again.calibration_split(0.1)] == [v.video_id for v in cal]
    assert len(cal) == 17
    cal_ids = {v.video_id for v in cal}
    assert cal_ids <= {v.video_id for v in thumos.split("train")}
    assert not cal_ids & {v.video_id for v in thumos.split("val")}


def test_thumos_segments_past_the_end_are_kept_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        ann = load_annotations(THUMOS, past_end="keep")
    assert ann.num_instances == 6365
    assert "30 segments" in caplog.text and "video_test_0000270" in caplog.text
    dropped = load_annotations(THUMOS, past_end="drop")
    assert dropped.num_instances == 6365 - 30
    message = _error(THUMOS, past_end="error")
    assert message.startswith(f"{THUMOS}: 30 problems:")
    assert "video_test_0000270.annotations[7].segment: end 193.4 > duration 176.25" in message


def test_ground_truth_format(thumos):
    gt = ground_truth(thumos.split("test"))
    assert len(gt) == 212
    assert gt["video_test_0000004"][0] == {"label": "CricketBowling", "segment": [0.2, 1.1]}
    assert sum(len(v) for v in gt.values()) == sum(len(v.annotations) for v in thumos.split("test"))


# --- splits on small files ----------------------------------------------------------


def test_training_subset_gives_train_and_val(tmp_path):
    db = {"a": _video("training"), "b": _video("validation"), "c": _video("train")}
    ann = load_annotations(_write(tmp_path, db))
    assert [v.video_id for v in ann.split("train")] == ["a", "c"]
    assert [v.video_id for v in ann.split("val")] == ["b"]
    message = str(pytest.raises(PbdError, ann.split, "test").value)
    assert (
        "no videos in split 'test'" in message
        and "(subsets present: train, training, validation)" in message
    )


def test_unknown_role_and_bad_fraction(thumos):
    with pytest.raises(PbdError, match="unknown split 'dev'"):
        thumos.split("dev")
    with pytest.raises(PbdError, match="calibration fraction"):
        thumos.calibration_split(0.0)


def test_dataclasses_are_plain_values():
    v = VideoInfo("x", "Test", 5.0, None, (Annotation("A", 1.0, 2.0),))
    assert ground_truth([v]) == {"x": [{"label": "A", "segment": [1.0, 2.0]}]}
    assert v.role == "test"


# --- validation -------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(PbdError, match="annotation file not found"):
        load_annotations(tmp_path / "nope.json")


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"database": {\n  "v": {"subset": "training",}\n}}')
    message = _error(path)
    assert "invalid JSON at line 2 column" in message


def test_missing_database(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"videos": {}}))
    assert "missing top-level key 'database'" in _error(path)


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"subset": "training", "annotations": []}, "vid: missing key 'duration'"),
        ({"duration": 3.0, "annotations": []}, "vid: missing key 'subset'"),
        ({"subset": "training", "duration": 3.0}, "vid: missing key 'annotations'"),
        (_video(duration="long"), "vid.duration: not a positive number ('long')"),
        (_video(duration=-1.0), "vid.duration: not a positive number (-1.0)"),
        (_video(duration=True), "vid.duration: not a positive number (True)"),
        ({**_video(), "fps": "fast"}, "vid.fps: not a positive number ('fast')"),
        (_video(segments=[("1", 2.0)]), "vid.annotations[0].segment: non-numeric value"),
        (_video(segments=[(5.0, 4.0)]), "vid.annotations[0].segment: start 5.0 >= end 4.0"),
        (_video(segments=[(-2.0, 4.0)]), "vid.annotations[0].segment: start -2.0 < 0"),
        (_video(label=""), "vid.annotations[0].label: missing or not a non-empty string"),
        (_video(subset="foo"), "vid: unknown subset 'foo' (expected training/validation/testing)"),
        ({**_video(), "annotations": {"a": 1}}, "vid.annotations: expected a list"),
    ],
)
def test_each_problem_names_video_and_field(tmp_path, entry, expected):
    message = _error(_write(tmp_path, {"vid": entry, "ok": _video()}))
    assert expected in message
    assert "1 problem:" in message


def test_segment_past_duration_is_an_error_when_asked(tmp_path):
    path = _write(tmp_path, {"vid": _video(duration=10.0, segments=[(8.0, 30.0)])})
    assert "vid.annotations[0].segment: end 30.0 > duration 10.0" in _error(path, past_end="error")


def test_small_overshoot_is_tolerated(tmp_path):
    path = _write(tmp_path, {"vid": _video(duration=10.0, segments=[(8.0, 10.5)])})
    ann = load_annotations(path, past_end="error")
    assert ann.videos["vid"].annotations[0].end == 10.5


def test_all_problems_reported_in_one_line(tmp_path):
    db = {
        "video_x": {"subset": "training", "annotations": []},
        "video_y": _video(segments=[(1.0, 2.0), (3.0, 4.0), (5.0, 4.0)]),
        "video_z": _video(subset="foo"),
        "fine": _video(),
    }
    message = _error(_write(tmp_path, db, "annotations.json"))
    assert "annotations.json: 3 problems: " in message
    assert "video_x: missing key 'duration'" in message
    assert "video_y.annotations[2].segment: start 5.0 >= end 4.0" in message
    assert "video_z: unknown subset 'foo'" in message
    assert "fine" not in message.split("problems:")[1]


def test_long_problem_lists_are_capped(tmp_path):
    db = {f"v{i:03d}": _video(subset="foo") for i in range(120)}
    message = _error(_write(tmp_path, db))
    assert "120 problems" in message and "... and 70 more" in message


def test_ground_truth_leaves_out_repeated_instances_as_opentads_evaluator():
    """Expected: what OpenTAD's `remove_duplicate_annotations` (opentad/evaluations/
    builder.py, commit 3dd7b03) returned for these annotations when run on them."""
    given = [("Diving", 1.0, 2.0), ("Diving", 1.0005, 1.9995), ("CliffDiving", 1.0, 2.0),
             ("Diving", 1.0, 2.002), ("Diving", 5.0, 6.0), ("Diving", 1.0, 2.0)]  # fmt: skip
    video = VideoInfo("v", "Test", 10.0, None, tuple(Annotation(*g) for g in given))
    assert ground_truth([video])["v"] == [
        {"label": "Diving", "segment": [1.0, 2.0]},
        {"label": "CliffDiving", "segment": [1.0, 2.0]},
        {"label": "Diving", "segment": [1.0, 2.002]},
        {"label": "Diving", "segment": [5.0, 6.0]},
    ]
    # class-agnostic: one label, so the CliffDiving copy of the Diving instance goes too
    assert ground_truth([video], label="action")["v"] == [
        {"label": "action", "segment": [1.0, 2.0]},
        {"label": "action", "segment": [1.0, 2.002]},
        {"label": "action", "segment": [5.0, 6.0]},
    ]


def test_ambiguous_segments_are_not_a_class(tmp_path, caplog):
    """THUMOS14's "Ambiguous" instances are left out, as OpenTAD's THUMOS datasets skip them."""
    video = _video(segments=((1.0, 2.0), (3.0, 4.0)))
    video["annotations"][1]["label"] = "Ambiguous"
    with caplog.at_level(logging.INFO):
        ann = load_annotations(_write(tmp_path, {"v1": video}))
    assert ann.class_names == ["Jump"]
    assert [(a.label, a.start) for a in ann.videos["v1"].annotations] == [("Jump", 1.0)]
    assert "1 'Ambiguous' segments left out" in caplog.text
