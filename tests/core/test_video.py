import os

import numpy as np
import pytest

from pbd_deploy.core.video import (
    decode_video,
    normalize,
    take_window,
    window_starts,
    write_video,
)
from pbd_deploy.errors import PbdError

T, H, W = 24, 48, 64


def _moving_gradient() -> np.ndarray:
    t = np.arange(T)[:, None, None]
    y = np.arange(H)[None, :, None]
    x = np.arange(W)[None, None, :]
    red = np.broadcast_to((x * 3 + t * 4) % 256, (T, H, W))
    green = np.broadcast_to(y * 5, (T, H, W))
    blue = np.full((T, H, W), 128)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)  # (T, H, W, 3)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "gradient.mp4"
    frames = _moving_gradient()
    write_video(path, frames, fps=24)
    return path, frames


def test_round_trip_keeps_frames_and_pixels(clip):
    path, frames = clip
    decoded, fps = decode_video(path)
    assert decoded.shape == (T, H, W, 3) and decoded.dtype == np.uint8
    assert fps == pytest.approx(24.0)
    # Lossy codec: per-frame and per-channel means stay close, pixels roughly so.
    np.testing.assert_allclose(decoded.mean(axis=(1, 2)), frames.mean(axis=(1, 2)), atol=4.0)
    assert np.abs(decoded.astype(float) - frames).mean() < 8.0
    # Motion survives: later frames are not copies of the first.
    assert np.abs(decoded[-1].astype(float) - decoded[0]).mean() > 20.0


def test_resample_by_timestamps(clip):
    path, _ = clip
    half, fps = decode_video(path, fps=12)
    assert half.shape[0] == 12 and fps == 12.0
    full, _ = decode_video(path)
    np.testing.assert_array_equal(half, full[::2])  # nearest earlier frame = every 2nd
    double, _ = decode_video(path, fps=48)
    assert double.shape[0] == 48
    np.testing.assert_array_equal(double[1::2], full)


def test_resize_and_center_crop(clip):
    path, _ = clip
    frames, _ = decode_video(path, size=32, crop=32)
    assert frames.shape == (T, 32, 32, 3)
    resized, _ = decode_video(path, size=36)
    assert resized.shape == (T, 36, 48, 3)
    # The crop is centred: it equals the middle columns of the uncropped resize.
    np.testing.assert_array_equal(decode_video(path, size=36, crop=36)[0], resized[:, :, 6:42])


def test_crop_larger_than_frame(clip):
    with pytest.raises(PbdError, match="set size >= 100"):
        decode_video(clip[0], crop=100)


def test_missing_video(tmp_path):
    with pytest.raises(PbdError, match="video not found: .*nope.mp4"):
        decode_video(tmp_path / "nope.mp4")


def test_corrupt_video(tmp_path):
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(PbdError, match=r"cannot decode video .*random.mp4: .*re-encode it"):
        decode_video(path)


def test_truncated_video(tmp_path, clip):
    path = tmp_path / "half.mp4"
    data = clip[0].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PbdError, match="cannot decode video"):
        decode_video(path)


def test_write_is_atomic_and_pads_odd_sizes(tmp_path):
    frames = _moving_gradient()[:4, :47, :63]
    path = tmp_path / "odd.mp4"
    write_video(path, frames, fps=29.97, codec="mpeg4")
    assert os.listdir(tmp_path) == ["odd.mp4"]  # no temporary left behind
    decoded, fps = decode_video(path)
    assert decoded.shape == (4, 48, 64, 3)
    assert fps == pytest.approx(29.97, abs=1e-3)


def test_streamed_frames_give_the_same_file_as_an_array(tmp_path):
    frames = _moving_gradient()
    assert write_video(tmp_path / "array.mp4", frames, fps=24) == T
    assert write_video(tmp_path / "stream.mp4", (f for f in frames), fps=24) == T
    assert write_video(tmp_path / "again.mp4", frames, fps=24) == T
    data = (tmp_path / "array.mp4").read_bytes()
    assert (tmp_path / "stream.mp4").read_bytes() == data  # streaming changes nothing
    assert (tmp_path / "again.mp4").read_bytes() == data  # and the bytes are reproducible


def test_a_bad_frame_half_way_leaves_nothing(tmp_path):
    frames = _moving_gradient()

    def stream():
        yield from frames[:5]
        yield frames[5, :-2]  # another size

    with pytest.raises(PbdError, match=r"needs \(48, 64, 3\) uint8 frames.*got \(46, 64, 3\)"):
        write_video(tmp_path / "x.mp4", stream(), fps=24)
    with pytest.raises(PbdError, match="got no frames"):
        write_video(tmp_path / "x.mp4", iter(()), fps=24)
    assert os.listdir(tmp_path) == []


def test_write_failure_is_a_pbd_error(tmp_path):
    with pytest.raises(PbdError, match="cannot write video"):
        write_video(tmp_path / "missing_dir" / "x.mp4", _moving_gradient()[:2], fps=24)
    with pytest.raises(PbdError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=24)


def test_normalize_layout_and_values():
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    frames[..., 0] = 255
    out = normalize(frames)
    assert out.shape == (3, 2, 4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], (255 - 123.675) / 58.395, rtol=1e-6)
    np.testing.assert_allclose(out[2], -103.53 / 57.375, rtol=1e-6)


@pytest.mark.parametrize("num_frames", [1, 15, 16, 17, 40, 64, 100, 257])
@pytest.mark.parametrize("window, stride", [(16, 16), (16, 8), (16, 5), (64, 48)])
def test_window_starts_cover_every_frame(num_frames, window, stride):
    starts = window_starts(num_frames, window, stride)
    covered = np.zeros(max(num_frames, window), bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered[:num_frames].all()
    assert starts == sorted(set(starts)) and starts[0] == 0
    if num_frames > window:
        assert starts[-1] == num_frames - window  # ends exactly at the video end
    else:
        assert starts == [0]


def test_window_starts_rejects_gaps():
    with pytest.raises(PbdError, match="stride 20 > window 16"):
        window_starts(100, 16, 20)


def test_take_window_pads_with_last_frame():
    frames = np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    chunk, valid = take_window(frames, 6, 8)
    assert chunk.shape == (8, 2, 2, 3) and valid == 4
    assert list(chunk[:, 0, 0, 0]) == [6, 7, 8, 9, 9, 9, 9, 9]
    chunk, valid = take_window(frames, 0, 4)
    assert valid == 4 and list(chunk[:, 0, 0, 0]) == [0, 1, 2, 3]
    with pytest.raises(PbdError, match="outside"):
        take_window(frames, 10, 4)
