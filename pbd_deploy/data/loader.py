"""Streaming input: a torch Dataset of (video, window) items, and the DataLoaders over it.

Nothing of an epoch is built ahead but its plan: one small (video, start, steps, crop) item per
window, drawn in the main process with the same random draws, in the same order, as the
windows used to be cut. Worker processes decode only the windows of each batch (see
`data.frames`), build the model inputs and the training targets, and hand them over in
pinned memory when training on CUDA. Under torchrun each rank gets its own videos
(DistributedSampler) before anything is decoded.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pbd_deploy.core.annotations import VideoInfo
from pbd_deploy.core.config import check_workers
from pbd_deploy.data import distributed
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.models.actionformer import assign_targets, point_grid
from pbd_deploy.models.detector import DetectorConfig


class Batcher:
    """Training samples -> (inputs, class targets, offset targets, valid mask) tensors.

    Built from a DetectorConfig or a Detector (the data set argument is not needed).
    """

    def __init__(self, config: DetectorConfig, dataset=None):
        config = getattr(config, "config", config)  # a Detector carries its config
        self.head, self.num_classes = config.head, len(config.class_names)
        self.grid = point_grid(config.head)

    def __call__(self, samples) -> tuple[torch.Tensor, ...]:
        xs, cls_t, reg_t, valid = [], [], [], []
        for x, segs, labels, valid_points in samples:
            cls, reg = assign_targets(
                torch.from_numpy(segs),
                torch.from_numpy(labels),
                self.num_classes,
                self.head,
                self.grid,
            )
            xs.append(torch.from_numpy(x))
            cls_t.append(cls)
            reg_t.append(reg)
            valid.append(self.grid[0] < valid_points)
        return torch.stack(xs), torch.stack(cls_t), torch.stack(reg_t), torch.stack(valid)

    make = __call__


class WindowItems(Dataset):
    """Windows of `videos` by item: (video position, start, steps, crop) gives a training
    sample (see `TadDataset.draw_window`); (video position, start) an evaluation window."""

    def __init__(self, dataset: TadDataset, videos: list[VideoInfo]):
        self.dataset, self.videos = dataset, videos

    def __getitem__(self, item: tuple):
        video = self.videos[item[0]]
        if len(item) == 4:
            return self.dataset.training_sample(video, *item[1:])
        return (item[0], item[1], *self.dataset.eval_window(video, item[1]))


class _Batches:
    """The batch sampler: whatever lists of items the current epoch's plan holds."""

    def __init__(self, batches=()):
        self.batches = list(batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _worker_init(_):
    torch.set_num_threads(1)  # workers decode and normalise; the model owns the cores


def _loader(items: WindowItems, batches: _Batches, collate, workers: int, device: str, persistent):
    return DataLoader(
        items,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=persistent and workers > 0,
        worker_init_fn=_worker_init if workers else None,
        # Its own generator: the loader must not draw from torch's global RNG, which
        # drop path uses, so a run with the loader repeats the run without it.
        generator=torch.Generator(),
    )


def epoch_plan(dataset: TadDataset, videos: list[VideoInfo], per_video: int, rng,
               augment: bool = False) -> list:  # fmt: skip
    """The shuffled windows of one epoch as (video position, start, steps, crop) items."""
    positions = list(range(len(videos))) * per_video
    order = rng.permutation(len(positions))
    draw = dataset.draw_window
    return [(positions[i], *draw(videos[positions[i]], rng, augment)) for i in order]


class TrainLoader:
    """The training windows of every epoch, from one DataLoader (persistent workers keep
    their decoded-video caches across epochs).

    Under torchrun rank r reads only its videos (DistributedSampler, padded so every rank
    takes the same number of steps) and batches of `batch_size // world` windows, so a
    step still sees `batch_size` windows in all.
    """

    def __init__(
        self,
        dataset: TadDataset,
        batch_size: int,
        windows_per_video: int,
        workers: int = 0,
        device: str = "cpu",
        augment: bool = False,
    ):
        check_workers(workers)
        self.dataset, self.per_video, self.augment = dataset, windows_per_video, augment
        videos = dataset.split("train")
        world, rank = distributed.world(), distributed.rank()
        mine = DistributedSampler(range(len(videos)), world, rank, shuffle=False)
        self.videos = [videos[i] for i in mine]
        self.batch_size = max(1, batch_size // world)
        self.batches = _Batches()
        items = WindowItems(dataset, self.videos)
        self.loader = _loader(items, self.batches, Batcher(dataset.config), workers, device, True)

    def __len__(self) -> int:
        """Steps per epoch."""
        return math.ceil(len(self.videos) * self.per_video / self.batch_size)

    def epoch(self, rng: np.random.Generator):
        """Draw the epoch's plan with `rng`; iterate to get its batches of tensors."""
        plan = epoch_plan(self.dataset, self.videos, self.per_video, rng, self.augment)
        size = self.batch_size
        self.batches.batches = [plan[i : i + size] for i in range(0, len(plan), size)]
        return iter(self.loader)


def _eval_collate(items):
    position = items[0][0]
    windows = [(start, valid) for _, start, _, valid in items]
    return position, windows, torch.from_numpy(np.stack([x for _, _, x, _ in items]))


def eval_batches(
    dataset: TadDataset,
    videos: list[VideoInfo],
    batch_size: int = 8,
    workers: int = 0,
    device: str = "cpu",
):
    """Yield (video, [(start, valid points)], inputs (B, ...)) over the sliding windows of
    each video in turn; a batch never mixes videos."""
    check_workers(workers)
    batches = []
    for position, video in enumerate(videos):
        starts = dataset.window_starts(video)
        batches += [
            [(position, s) for s in starts[i : i + batch_size]]
            for i in range(0, len(starts), batch_size)
        ]
    items = WindowItems(dataset, videos)
    loader = _loader(items, _Batches(batches), _eval_collate, workers, device, False)
    for position, windows, x in loader:
        yield videos[position], windows, x
