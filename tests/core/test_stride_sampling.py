"""Sampling "stride" (OpenTAD's THUMOS14 sliding-window input) against OpenTAD's own code:
tests/fixtures/opentad/stride.json, written by make_stride_fixture.py with OpenTAD's
ThumosSlidingDataset, LoadFrames(method="sliding_window") and convert_to_seconds."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pbd_deploy.core.video import aligned_window_starts, decode_video, take_window, write_video
from pbd_deploy.core.windows import WindowSpec, points_to_seconds, window_plan
from pbd_deploy.errors import PbdError

FIXTURE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "opentad" / "stride.json").read_text()
)
STRIDE = FIXTURE["feature_stride"]
VIDEOS = [
    (key, list(rows))
    for key, rows in itertools.groupby(FIXTURE["windows"], key=lambda r: (r["video"], r["window_size"]))
]  # fmt: skip


def stride_spec(window: int, frame_stride: int = STRIDE) -> WindowSpec:
    return WindowSpec(
        mode="video", window=window, stride=window // 2, fps=None, resize=32, crop=32,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), feature_dim=None, feature_stride=1.0,
        head_length=window, levels=3, sampling="stride", frame_stride=frame_stride,
    )  # fmt: skip


def test_fixture_covers_the_cases_that_matter():
    short = [key for key, rows in VIDEOS if rows[0]["valid"] < rows[0]["window_size"]]
    repeated = [
        key for key, rows in VIDEOS
        if len(rows) > 1 and rows[-1]["window_start_frame"] == rows[-2]["window_start_frame"]
    ]  # fmt: skip
    assert len(short) >= 3 and len(repeated) >= 3  # OpenTAD's last window repeats the one before
    assert {round(r["fps"], 6) for r in FIXTURE["windows"]} == {25.0, 30.0}
    assert any(rows[0]["frames"] % STRIDE for _, rows in VIDEOS)  # not a multiple of 4


@pytest.mark.parametrize("key, rows", VIDEOS, ids=[f"{v}-{w}" for (v, w), _ in VIDEOS])
def test_window_plan_equals_opentads(key, rows):
    """Start steps (OpenTAD's feature_start_idx), duplicates included, in OpenTAD's order."""
    _, window = key
    steps = math.ceil(rows[0]["frames"] / STRIDE)  # len(np.arange(0, frames, 4))
    starts = window_plan(steps, stride_spec(window))
    assert starts == [r["feature_start_idx"] for r in rows]
    assert [s * STRIDE for s in starts] == [r["window_start_frame"] for r in rows]


@pytest.mark.parametrize("key, rows", VIDEOS, ids=[f"{v}-{w}" for (v, w), _ in VIDEOS])
def test_window_frames_and_valid_length_equal_opentads(key, rows):
    """take_window over every 4th frame = LoadFrames' frame_inds (edge-padded) and masks."""
    _, window = key
    frames = np.arange(0, rows[0]["frames"], STRIDE)  # the file frame of each input step
    for row, start in zip(rows, window_plan(len(frames), stride_spec(window))):
        picked, valid = take_window(frames, start, window)
        if "frame_inds" in row:
            assert picked.tolist() == row["frame_inds"]
        else:
            assert [picked[0], picked[-1], len(picked)] == row["frame_inds_first_last_count"]
        assert valid == row["valid"] and row["masks"] == window


@pytest.mark.parametrize("row", FIXTURE["windows"][::3], ids=lambda r: f"{r['video']}@{r['window_start_frame']}")  # fmt: skip
def test_points_to_seconds_equal_opentads_convert_to_seconds(row):
    """With OpenTAD's post-processing point x is at x steps (`core.postprocessors` moves it
    back the half step our mapping adds); input steps at the file's rate over the stride."""
    points = np.asarray(row["points"], np.float32)
    spec = stride_spec(row["window_size"])
    start = row["window_start_frame"] // STRIDE
    got = points_to_seconds(points - np.float32(0.5), start, row["fps"] / STRIDE, spec)
    expected = np.asarray(row["seconds"], np.float32)
    np.testing.assert_allclose(np.maximum(got, 0.0), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("steps", [0, 1, 15, 16, 17, 31, 32, 33, 100])
def test_aligned_windows_cover_every_step_and_end_at_the_last(steps):
    starts = aligned_window_starts(steps, 16, 8)
    assert starts[0] == 0 and starts[-1] == max(0, steps - 16)
    covered = set().union(*(range(s, s + 16) for s in starts))
    assert covered >= set(range(steps))
    assert all(b - a in (0,) or 0 < b - a <= 8 for a, b in zip(starts, starts[1:]))


def test_bad_window_or_stride_are_one_line_errors():
    with pytest.raises(PbdError, match="must be positive"):
        aligned_window_starts(10, 0, 1)
    with pytest.raises(PbdError, match="would skip frames"):
        aligned_window_starts(10, 4, 8)


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_decode_with_a_frame_stride_keeps_every_kth_decoded_frame(tmp_path, fps):
    rng = np.random.default_rng(1)
    path = tmp_path / "v.mp4"
    write_video(path, rng.integers(0, 256, size=(23, 32, 48, 3), dtype=np.uint8), fps=fps)
    every, src_fps = decode_video(path, size=16)
    strided, rate = decode_video(path, size=16, frame_stride=4)
    np.testing.assert_array_equal(strided, every[::4])  # frames 0, 4, ..., 20
    assert (
        len(strided) == 6 and rate == pytest.approx(src_fps / 4) and src_fps == pytest.approx(fps)
    )
    with pytest.raises(PbdError, match="not both"):
        decode_video(path, fps=7.5, frame_stride=4)
