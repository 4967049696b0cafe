import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest

from pbd_deploy.core import video as core_video
from pbd_deploy.data import synthetic
from pbd_deploy.data.render import LINEAR_DIRECTIONS, Actor, VideoPlan, render_video
from pbd_deploy.data.synthetic import (
    PATTERNS,
    SUBSETS,
    SynthConfig,
    make_synthetic,
    plan_videos,
    sample_actor,
)
from pbd_deploy.errors import PbdError

THUMOS = Path(__file__).parents[1] / "fixtures" / "thumos14.json"
SMALL = dict(videos=6, classes=3, min_duration=10.0, max_duration=14.0, seed=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    calls = []
    make_synthetic(out, SynthConfig(**SMALL), progress=lambda d, t: calls.append((d, t)))
    return out, calls


def _db(out: Path) -> dict:
    return json.loads((out / "annotations.json").read_text())


def test_annotations_format(small):
    out, calls = small
    data = _db(out)
    assert data["version"] == "synthetic-1"
    assert SynthConfig.from_dict(data["synthetic"]) == SynthConfig(**SMALL)
    assert len(data["database"]) == 6
    for entry in data["database"].values():
        assert entry["subset"] in SUBSETS and entry["fps"] == 10.0
        assert entry["annotations"]
        for ann in entry["annotations"]:
            start, end = ann["segment"]
            assert ann["label"] in PATTERNS[:3]
            assert 0 <= start < end <= entry["duration"]
            assert end - start <= synthetic.MAX_INSTANCE_S + 1e-6
    assert calls == [(i, 6) for i in range(1, 7)]
    assert not list(out.parent.glob("ds.*"))  # no temporary or old directory left behind


def test_every_split_has_every_class(small):
    seen = {s: set() for s in SUBSETS}
    for entry in _db(small[0])["database"].values():
        seen[entry["subset"]].update(a["label"] for a in entry["annotations"])
    assert all(labels == set(PATTERNS[:3]) for labels in seen.values())


def test_videos_decode_to_stated_length(small):
    out, _ = small
    for vid, entry in _db(out)["database"].items():
        with av.open(str(out / "videos" / f"{vid}.mp4")) as container:
            frames = list(container.decode(video=0))
        assert abs(len(frames) - entry["duration"] * entry["fps"]) <= 1
        assert (frames[0].width, frames[0].height) == (64, 64)


def test_same_seed_same_output(small, tmp_path):
    out, _ = small
    again = make_synthetic(tmp_path / "again", SynthConfig(**SMALL))
    assert (again / "annotations.json").read_bytes() == (out / "annotations.json").read_bytes()
    # One x264 thread makes the encoder deterministic, so the videos match byte for byte too.
    for video in (out / "videos").iterdir():
        assert (again / "videos" / video.name).read_bytes() == video.read_bytes()
    other = plan_videos(SynthConfig(**{**SMALL, "seed": 4}))
    assert other != plan_videos(SynthConfig(**SMALL))


def test_timing_follows_thumos_statistics():
    plans = plan_videos(SynthConfig(videos=200))
    lengths = np.array([a.end - a.start for p in plans for a in p.actors])
    assert lengths.max() <= synthetic.MAX_INSTANCE_S + 1e-6
    assert 2.0 < np.median(lengths) < 4.0  # THUMOS14 median is 3.0 s
    pairs = [(a, b) for p in plans for a, b in zip(p.actors, p.actors[1:])]
    overlap = np.mean([b.start < a.end for a, b in pairs])
    assert 0.0 < overlap < 0.2  # a few overlaps, like THUMOS14 (9%)
    assert all(a.start <= b.start for a, b in pairs)


def test_like_copies_timing(tmp_path):
    source = json.loads(THUMOS.read_text())["database"]
    config = SynthConfig(
        videos=6, classes=4, like=str(THUMOS), fps=1.0, size=16, split_fractions=(0.5, 0.17, 0.33)
    )
    plans = plan_videos(config)
    assert len(plans) == 6 and {p.subset for p in plans} == set(SUBSETS)
    for plan in plans:
        entry = source[plan.source]
        assert plan.duration == entry["duration"]
        segs = sorted(
            [max(0.0, s), min(e, entry["duration"])]
            for s, e in (a["segment"] for a in entry["annotations"])
        )
        assert [[a.start, a.end] for a in plan.actors] == [s for s in segs if s[1] > s[0]]
    out = make_synthetic(tmp_path / "like", config)
    data = _db(out)
    assert {e["duration"] for e in data["database"].values()} == {p.duration for p in plans}
    assert data["synthetic"]["like"] == str(THUMOS)


def test_existing_dir_needs_force(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "annotations.json").write_text("old")
    config = SynthConfig(**{**SMALL, "videos": 3, "classes": 1})
    with pytest.raises(PbdError, match="already exists; .*pass --force"):
        make_synthetic(out, config)
    assert (out / "annotations.json").read_text() == "old"
    make_synthetic(out, config, force=True)
    assert _db(out)["version"] == "synthetic-1"
    assert len(list((out / "videos").glob("*.mp4"))) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_force_refuses_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(PbdError, match="does not look like a pbd-deploy output"):
        make_synthetic(tmp_path, SynthConfig(**SMALL), force=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_crash_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "write_video", boom)
    with pytest.raises(RuntimeError):
        make_synthetic(tmp_path / "ds", SynthConfig(**SMALL))
    assert list(tmp_path.iterdir()) == []


def test_mpeg4_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(core_video.av, "codecs_available", {"mpeg4"})  # an FFmpeg without x264
    out = make_synthetic(tmp_path / "ds", SynthConfig(**{**SMALL, "videos": 3, "classes": 1}))
    video = next((out / "videos").iterdir())
    with av.open(str(video)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
        assert len(list(container.decode(video=0))) > 90


@pytest.mark.parametrize(
    "bad",
    [
        dict(classes=0),
        dict(classes=len(PATTERNS) + 1),
        dict(videos=2),
        dict(size=63),
        dict(fps=0),
        dict(min_duration=5, max_duration=4),
        dict(split_fractions=(0.5, 0.5, 0)),
        dict(contrast=1.5),
        dict(noise=-1),
        dict(fps="fast"),
        dict(videos=3.5),
    ],
)
def test_config_validation(bad):
    with pytest.raises(PbdError):
        SynthConfig(**bad)


def test_config_round_trip():
    config = SynthConfig(videos=7, like="x.json", noise=0)
    assert SynthConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(PbdError, match="unknown"):
        SynthConfig.from_dict({"videos": 3, "colour": "red"})


def test_too_few_instances_for_classes():
    with pytest.raises(PbdError, match="too few action instances"):
        plan_videos(SynthConfig(videos=3, classes=15, min_duration=2, max_duration=2))


# ---------------------------------------------------------------- motion content

CLEAN = SynthConfig(noise=0.0, distractors=0)
RED = (255.0, 0.0, 0.0)


def _track(actor: Actor, duration: float = 6.0):
    """Centroid x, y and pixel area of the red foreground in every frame."""
    frames = render_video(VideoPlan("v", "testing", duration, (actor,)), CLEAN).astype(int)
    mask = frames[..., 0] - frames[..., 1] > 150
    area = mask.sum(axis=(1, 2))
    ys, xs = np.mgrid[:64, :64]
    with np.errstate(invalid="ignore"):
        return (mask * xs).sum((1, 2)) / area, (mask * ys).sum((1, 2)) / area, area


def _actor(pattern: str, seed: int = 0) -> Actor:
    actor = sample_actor(np.random.default_rng(seed), pattern, 1.0, 4.0, CLEAN)
    return dataclasses.replace(actor, colour=RED, hold_before=0.5, hold_after=0.5)


def test_move_right_moves_right():
    actor = Actor("MoveRight", 1.0, 4.0, 0.5, 0.5, "square", RED, 5.0, x=10.0, y=30.0, speed=8.0)
    x, y, area = _track(actor)
    assert (area[:5] == 0).all() and (area[46:] == 0).all()  # absent outside the holds
    assert np.allclose(x[5:11], 10, atol=0.2) and np.allclose(x[40:46], 34, atol=0.2)
    assert (np.diff(x[10:41]) > 0).all() and np.allclose(y[5:46], 30, atol=0.2)


@pytest.mark.parametrize("pattern", list(LINEAR_DIRECTIONS))
def test_translations_follow_their_direction(pattern):
    x, y, _ = _track(_actor(pattern))
    dx, dy = x[40] - x[10], y[40] - y[10]
    ux, uy = LINEAR_DIRECTIONS[pattern]
    assert np.hypot(dx, dy) > 0.15 * 64 - 1
    assert np.dot([dx, dy], [ux, uy]) / np.hypot(dx, dy) > 0.99


@pytest.mark.parametrize("pattern,sign", [("OrbitClockwise", 1), ("OrbitCounterClockwise", -1)])
def test_orbits_turn_the_right_way(pattern, sign):
    actor = _actor(pattern)
    x, y, _ = _track(actor)
    angle = np.unwrap(np.arctan2(y[10:41] - actor.y, x[10:41] - actor.x))
    # With image y pointing down, a growing angle is clockwise on screen.
    assert (sign * np.diff(angle) > 0).all()


@pytest.mark.parametrize("pattern,grows", [("GrowLarger", True), ("ShrinkSmaller", False)])
def test_scaling(pattern, grows):
    x, y, area = _track(_actor(pattern))
    assert (area[40] > 3 * area[10]) if grows else (area[10] > 3 * area[40])
    assert np.ptp(x[10:41]) < 0.5 and np.ptp(y[10:41]) < 0.5


def test_blink_and_oscillations():
    _, _, area = _track(_actor("BlinkFast"))
    assert (area[5:10] > 0).all() and (area[10:41] == 0).sum() >= 8  # steady hold, then blinking
    x, y, _ = _track(_actor("OscillateHorizontal"))
    assert np.ptp(x[10:41]) > 10 and np.ptp(y[10:41]) < 0.5
    x, y, _ = _track(_actor("OscillateVertical"))
    assert np.ptp(y[10:41]) > 10 and np.ptp(x[10:41]) < 0.5


def test_colour_does_not_identify_class():
    plans = plan_videos(SynthConfig(videos=30, classes=3))
    hues = {}
    for actor in (a for p in plans for a in p.actors):
        hues.setdefault(actor.pattern, []).append(np.argmax(actor.colour))
    assert all(len(set(h)) == 3 for h in hues.values())  # every class shows every dominant hue
