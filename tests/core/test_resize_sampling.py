"""The whole-video resize input mode against OpenTAD's own code (tests/fixtures/opentad/
resize.json, written by make_resize_fixture.py with OpenTAD's LoadFrames and
convert_to_seconds)."""

import json
from pathlib import Path

import numpy as np
import pytest

from pbd_deploy.core.video import decode_resized, decode_video, resize_indices, write_video
from pbd_deploy.core.windows import WindowSpec, points_to_seconds
from pbd_deploy.errors import PbdError

FIXTURE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "opentad" / "resize.json").read_text()
)


def _spec(head_length: int, window: int, sampling: str = "resize") -> WindowSpec:
    return WindowSpec(
        mode="video", window=window, stride=window, fps=None, resize=32, crop=32,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), feature_dim=None, feature_stride=1.0,
        head_length=head_length, levels=3, sampling=sampling,
    )  # fmt: skip


@pytest.mark.parametrize("case", FIXTURE["frames"], ids=lambda c: "{total_frames}-{resize_length}x{scale_factor}".format(**c))  # fmt: skip
def test_frame_indices_equal_opentads(case):
    frames = case["resize_length"] * case["scale_factor"]
    got = resize_indices(case["total_frames"], frames)
    assert got.tolist() == case["frame_inds"]
    assert case["masks"] == case["resize_length"]  # every head point is valid


@pytest.mark.parametrize("case", FIXTURE["seconds"], ids=lambda c: str(c["resize_length"]))
def test_points_to_seconds_equal_opentads_convert_to_seconds(case):
    """Bit for bit in float32, after the clip to [0, duration] both sides make."""
    length, duration = case["resize_length"], case["duration"]
    points = np.asarray(case["points"], np.float32)
    spec = _spec(length, length * 4)
    got = points_to_seconds(points, 0, 99.0, spec, duration)  # fps plays no part
    got = np.clip(got, 0.0, duration)  # as core.windows.window_candidates clips
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.asarray(case["seconds"], np.float32))
    # and not the sliding-window formula, which would put points half a step later
    assert not np.allclose(got, np.clip(points_to_seconds(points, 0, 1.0, _spec(
        length, length, "rate")), 0.0, duration))  # fmt: skip


def test_resized_points_need_the_duration():
    with pytest.raises(PbdError, match="duration"):
        points_to_seconds(np.zeros((1, 2), np.float32), 0, 10.0, _spec(16, 64))


def test_old_model_json_reads_as_sliding_windows():
    config = {
        "input": {"mode": "video", "window": 32, "stride": 24, "fps": 10.0, "resize": 32,
                  "crop": 32, "mean": [0, 0, 0], "std": [1, 1, 1]},
        "head": {"length": 16, "levels": 3},
    }  # fmt: skip
    assert WindowSpec.from_model_config(config).sampling == "rate"
    config["input"]["sampling"] = "resize"
    assert WindowSpec.from_model_config(config).sampling == "resize"


def test_bad_frame_counts_are_one_line_errors():
    with pytest.raises(PbdError, match="cannot pick 8 frames from a video of 0"):
        resize_indices(0, 8)


@pytest.mark.parametrize("frames", [7, 40])  # fewer and more frames than the video has
def test_decode_resized_picks_the_indexed_frames_of_a_full_decode(tmp_path, frames):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(23, 32, 48, 3), dtype=np.uint8)
    path = tmp_path / "v.mp4"
    write_video(path, video, fps=5.0)
    every, fps = decode_video(path, size=16)
    picked, rate = decode_resized(path, frames, size=16)
    np.testing.assert_array_equal(picked, every[resize_indices(len(every), frames)])
    assert picked.shape[0] == frames
    assert frames / rate == pytest.approx(len(every) / fps)  # the video's length is kept
