import numpy as np
import pytest

from pbd_deploy.data.sampling import crop_segments, sample_window
from pbd_deploy.errors import PbdError


def _overlap(seg, start, window):
    return max(0.0, min(seg[1], start + window) - max(seg[0], start))


def test_short_video_starts_at_zero():
    rng = np.random.default_rng(0)
    assert sample_window(100, np.array([[10.0, 20.0]]), 128, rng) == 0
    assert sample_window(128, np.zeros((0, 2)), 128, rng) == 0


def test_sampled_windows_keep_an_action_over_many_seeds():
    for seed in range(300):
        rng = np.random.default_rng(seed)
        num_frames = int(rng.integers(200, 3000))
        count = int(rng.integers(1, 6))
        starts = rng.uniform(0, num_frames - 40, count)
        segs = np.stack([starts, starts + rng.uniform(2, 40, count)], axis=1)  # (N, 2)
        window = int(rng.integers(64, 200))
        start = sample_window(num_frames, segs, window, rng)
        assert 0 <= start <= num_frames - window
        kept_parts = [_overlap(s, start, window) / (s[1] - s[0]) for s in segs]
        assert max(kept_parts) >= 0.5, (seed, start, segs)
        cropped, labels = crop_segments(segs, np.arange(count), start, window)
        assert len(cropped) >= 1 and len(labels) == len(cropped)


def test_fallback_centres_on_an_action():
    # With no random tries left, the window must be centred on the (only) action.
    segs = np.array([[5000.0, 5002.0]])
    for seed in range(20):
        start = sample_window(100_000, segs, 64, np.random.default_rng(seed), max_tries=0)
        assert _overlap(segs[0], start, 64) == 2.0


def test_no_actions_gives_any_valid_start():
    rng = np.random.default_rng(3)
    starts = {sample_window(1000, np.zeros((0, 2)), 100, rng) for _ in range(50)}
    assert all(0 <= s <= 900 for s in starts) and len(starts) > 1


def test_sampling_is_reproducible_with_the_same_seed():
    segs = np.array([[100.0, 150.0], [700.0, 760.0]])
    a = [sample_window(2000, segs, 256, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(a)) == 1


def test_crop_segments_shift_clip_and_filter():
    segs = np.array([[90.0, 110.0], [95.0, 130.0], [150.0, 160.0], [190.0, 230.0], [10.0, 20.0]])
    labels = np.array([0, 1, 2, 3, 4])
    out, kept = crop_segments(segs, labels, start=100, window=100)
    # [90,110]: half inside -> kept, clipped; [95,130]: 30/35 inside; [190,230]: 10/40 out.
    np.testing.assert_allclose(out, [[0.0, 10.0], [0.0, 30.0], [50.0, 60.0]])
    assert list(kept) == [0, 1, 2]
    assert out.dtype == np.float32 and (out >= 0).all() and (out <= 100).all()


def test_crop_segments_empty_and_mismatch():
    out, kept = crop_segments(np.zeros((0, 2)), np.zeros(0, int), 0, 10)
    assert out.shape == (0, 2) and kept.shape == (0,)
    with pytest.raises(PbdError, match="2 segments but 1 labels"):
        crop_segments(np.array([[0, 1], [2, 3]]), np.array([0]), 0, 10)
    with pytest.raises(PbdError, match=r"shape \(N, 2\)"):
        crop_segments(np.array([1.0, 2.0, 3.0]), np.array([0]), 0, 10)
