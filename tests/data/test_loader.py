"""The streaming pipeline against the old whole-video path, computed here independently.

The old path decoded every video whole, then per epoch: repeat the train split
windows_per_video times, permute with the run's generator, and per window draw the start
(sample_window), then the crop offsets, cut, crop, normalise and assign targets. The
loader must give exactly those tensors, batch for batch, with and without worker
processes, and with the small-video cache on or off (seek path).
"""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.core.video import decode_video, normalize, take_window
from pbd_deploy.core.windows import sliding_windows
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.data.frames import index_video, read_steps
from pbd_deploy.data.loader import Batcher, TrainLoader, eval_batches
from pbd_deploy.data.sampling import crop_segments, sample_window
from pbd_deploy.errors import PbdError
from pbd_deploy.models.actionformer import assign_targets, point_grid
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory):
    """97 noise frames at 29.97 fps, a keyframe every 12 frames and B-frames."""
    path = tmp_path_factory.mktemp("gop") / "gop.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (97, 48, 64, 3)).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"bf": "2", "keyint": "12", "sc_threshold": "0"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("fps,size", [(10.0, 32), (None, None), (7.0, 40), (24.0, None)])
def test_seeking_reads_the_frames_of_a_whole_decode(gop_video, synth_data, fps, size):
    for path in (gop_video, next((synth_data / "videos").glob("*.mp4"))):
        whole, _ = decode_video(path, fps=fps, size=size)
        index = index_video(path, fps)
        assert index.steps == len(whole) and index.shape(size) == whole.shape[1:3]
        for start in range(0, len(whole), 7):
            assert np.array_equal(read_steps(index, start, 16, size), whole[start : start + 16])


def _dataset(synth_data, cache_mb=512):
    classes = load_annotations(synth_data / "annotations.json").class_names
    config = tiny_config(classes=classes, window=32)
    config.input.resize = 40  # frames larger than the crop: the crop offsets are drawn
    return TadDataset(synth_data, config, cache_mb=cache_mb)


def _old_epoch(dataset, per_video, batch_size, rng):
    """The old `epoch_samples` + `Batcher.make`, on whole decoded videos."""
    inp, head = dataset.input, dataset.config.head
    videos = dataset.split("train") * per_video
    samples = []
    for i in rng.permutation(len(videos)):
        video = videos[i]
        frames, fps = decode_video(
            dataset.root / "videos" / f"{video.video_id}.mp4", inp.fps, inp.resize
        )
        segs, labels = dataset.segments_in_steps(video, fps)
        start = sample_window(len(frames), segs, inp.window, rng)
        steps, valid = take_window(frames, start, inp.window)
        _, h, w, _ = steps.shape
        top, left = int(rng.integers(h - inp.crop + 1)), int(rng.integers(w - inp.crop + 1))
        x = normalize(steps[:, top : top + inp.crop, left : left + inp.crop], inp.mean, inp.std)
        segs, labels = crop_segments(segs, labels, start, inp.window)
        points = (segs * (head.length / inp.window) - 0.5).astype(np.float32)
        samples.append((x, points, labels, valid * (head.length / inp.window)))
    grid = point_grid(head)
    for i in range(0, len(samples), batch_size):
        xs, cls_t, reg_t, valid = [], [], [], []
        for x, points, labels, valid_points in samples[i : i + batch_size]:
            c, r = assign_targets(torch.from_numpy(points), torch.from_numpy(labels), 3, head, grid)
            xs.append(torch.from_numpy(x)), cls_t.append(c), reg_t.append(r)
            valid.append(grid[0] < valid_points)
        yield tuple(torch.stack(t) for t in (xs, cls_t, reg_t, valid))


@pytest.mark.parametrize("workers,cache_mb", [(0, 512), (2, 0)])
def test_streaming_epochs_equal_the_old_whole_video_epochs(synth_data, workers, cache_mb):
    dataset = _dataset(synth_data, cache_mb)
    loader = TrainLoader(dataset, batch_size=3, windows_per_video=3, workers=workers)
    ours, theirs = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(2):  # the generator carries over from epoch to epoch
        new = list(loader.epoch(ours))
        old = list(_old_epoch(dataset, 3, 3, theirs))
        assert len(new) == len(old) == len(loader) > 1
        for a, b in zip(new, old):
            for t, u in zip(a, b):
                assert t.dtype == u.dtype and torch.equal(t, u)
    assert ours.integers(2**62) == theirs.integers(2**62)  # the same draws were made


def test_eval_windows_equal_the_whole_video_windows(synth_data):
    dataset = _dataset(synth_data, cache_mb=0)
    dataset.input.stride = 12  # overlapping windows
    dataset.spec = type(dataset.spec).from_model_config(dataset.config.to_dict())
    videos = dataset.split("test")
    got = [(v.video_id, w, x) for v, w, x in eval_batches(dataset, videos, 4, workers=2)]
    batches = iter(got)
    for video in videos:
        frames, _ = decode_video(dataset.root / "videos" / f"{video.video_id}.mp4", 10.0, 40)
        expected = list(sliding_windows(frames, dataset.spec))
        assert len(expected) > 4  # several batches per video
        for i in range(0, len(expected), 4):
            video_id, windows, x = next(batches)
            part = expected[i : i + 4]
            assert video_id == video.video_id
            assert windows == [(s, v) for s, _, v in part]
            assert np.array_equal(x.numpy(), np.stack([m for _, m, _ in part]))
    assert next(batches, None) is None


def test_the_loader_does_not_touch_torch_random_state(synth_data):
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    loader = TrainLoader(_dataset(synth_data), batch_size=4, windows_per_video=1)
    list(loader.epoch(np.random.default_rng(0)))
    assert torch.equal(torch.rand(4), expected)  # drop path draws stay where they were


def test_small_videos_are_decoded_once_and_the_cache_is_capped(synth_data):
    dataset = _dataset(synth_data)
    video = dataset.split("train")[0]
    dataset.read(video, 0, 8)
    assert video.video_id in dataset._cache
    size = dataset._cache[video.video_id][0].nbytes
    capped = _dataset(synth_data, cache_mb=8 * size / 2**20 - 1e-3)  # 1/8 of it < the video
    capped.read(video, 0, 8)
    assert not capped._cache  # read by seeking, nothing kept


def test_negative_workers_are_refused(synth_data):
    with pytest.raises(PbdError, match="--workers must be 0"):
        TrainLoader(_dataset(synth_data), 2, 1, workers=-1)
    assert Batcher(tiny_config()).num_classes == 3
