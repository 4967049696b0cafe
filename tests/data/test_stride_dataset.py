"""Sampling "stride" in the dataset (eval windows) and the runtime's reader: video files of the
frame counts and rates in tests/fixtures/opentad/stride.json give OpenTAD's windows, frame
indices and valid lengths. Each frame's colour codes its index, so the decoded window says
which file frames it holds."""

import json
from pathlib import Path

import numpy as np
import pytest

from pbd_deploy.core.video import decode_video, take_window, write_video
from pbd_deploy.core.windows import model_input, window_plan
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.models.detector import InputConfig
from tests.conftest import tiny_config

FIXTURE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "opentad" / "stride.json").read_text()
)
WINDOW = 16
ROWS = [r for r in FIXTURE["windows"] if r["window_size"] == WINDOW]
VIDEOS = {r["video"]: (r["frames"], r["fps"]) for r in ROWS}


def _frame(i: int) -> np.ndarray:
    """A 32x32 frame whose red and green levels code i (0..255) in steps of 16."""
    frame = np.full((32, 32, 3), 128, np.uint8)
    frame[..., 0], frame[..., 1] = 16 * (i % 16) + 8, 16 * (i // 16) + 8
    return frame


def _indices(frames: np.ndarray) -> list[int]:
    """(T, H, W, 3) decoded frames -> the index each one codes."""
    r, g = (np.round((frames[:, 8:24, 8:24, c].mean(axis=(1, 2)) - 8) / 16) for c in (0, 1))
    return (r + 16 * g).astype(int).tolist()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("stride_videos")
    (root / "videos").mkdir()
    database = {}
    for name, (frames, fps) in VIDEOS.items():
        write_video(root / "videos" / f"{name}.mp4", [_frame(i) for i in range(frames)], fps)
        database[name] = {"subset": "testing", "duration": frames / fps, "fps": fps,
                          "annotations": []}  # fmt: skip
    (root / "annotations.json").write_text(json.dumps({"database": database}))
    return root


def stride_config():
    config = tiny_config(classes=["a"], window=WINDOW)
    config.input = InputConfig(
        sampling="stride", frame_stride=FIXTURE["feature_stride"], window=WINDOW,
        stride=WINDOW // 2, resize=32, crop=32, mean=(0, 0, 0), std=(1, 1, 1),
    )  # fmt: skip
    return config


def test_the_colour_code_survives_encoding(videos):
    frames, _ = decode_video(videos / "videos" / "v250_25.mp4")
    assert _indices(frames) == list(range(250))


@pytest.mark.parametrize("cache_mb", [512, 0])  # decoded whole / sought window by window
def test_dataset_eval_windows_equal_opentads(videos, cache_mb):
    ds = TadDataset(videos, stride_config(), cache_mb=cache_mb)
    head = ds.config.head.length / WINDOW
    for video in ds.split("test"):
        rows = [r for r in ROWS if r["video"] == video.video_id]
        windows = list(ds.sliding_windows(video))
        assert [w[0] * 4 for w in windows] == [r["window_start_frame"] for r in rows]
        for (_, x, valid), row in zip(windows, rows):
            frames = np.ascontiguousarray(x.transpose(1, 2, 3, 0))  # (T, H, W, 3) pixel values
            assert _indices(frames) == row["frame_inds"], video.video_id
            assert valid == row["valid"] * head


def test_runtime_reader_and_plan_equal_opentads(videos):
    """What the runtime Detector does with a file: decode_video(frame_stride) + window_plan
    + take_window (`core.windows.sliding_windows`)."""
    spec = TadDataset(videos, stride_config()).spec
    for name, (frames, fps) in VIDEOS.items():
        rows = [r for r in ROWS if r["video"] == name]
        data, rate = decode_video(videos / "videos" / f"{name}.mp4", size=32, frame_stride=4)
        assert rate == pytest.approx(fps / 4)
        starts = window_plan(len(data), spec)
        assert [s * 4 for s in starts] == [r["window_start_frame"] for r in rows]
        for start, row in zip(starts, rows):
            steps, valid = take_window(data, start, WINDOW)
            x = model_input(steps, spec)
            assert _indices(np.ascontiguousarray(x.transpose(1, 2, 3, 0))) == row["frame_inds"]
            assert valid == row["valid"]
