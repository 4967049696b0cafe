"""Block importance: how good is the model without each of its blocks, on calibration data.

Prefix reuse: the tokens entering block b do not depend on whether a later block is
dropped, so one forward pass per batch keeps the input of every block, and the candidate
"without b" starts from block b's input and runs only the blocks after it. For 12 blocks
that is 11 (the shared pass; the last block's output is never needed) + 66 block
evaluations instead of 12 * 11 = 132 (0.58x), and the result is the same computation, so
the same block is chosen.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pbd_deploy.compress.blocks import drop_block, list_blocks
from pbd_deploy.core.annotations import VideoInfo, ground_truth
from pbd_deploy.core.metrics import evaluate_detections
from pbd_deploy.data import distributed
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.data.loader import Batcher
from pbd_deploy.eval.inference import merge_windows, window_parts
from pbd_deploy.models.actionformer import decode_segments, detection_loss
from pbd_deploy.models.detector import Detector

HIGHER_IS_BETTER = {"map": True, "loss": False, "mse": False}


def window_batches(dataset: TadDataset, video: VideoInfo, batch_size: int):
    """Yield batches [(start, model input, target points, labels, valid points)] of a video.

    Sliding windows over the whole video, as at inference, with each window's ground truth
    (for the `loss` criterion). Deterministic: no random crops.
    """
    windows = dataset.sliding_windows(video)
    while batch := list(itertools.islice(windows, batch_size)):
        yield [(s, x, *dataset.window_targets(video, s), v) for s, x, v in batch]


def block_inputs(model: Detector, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple]:
    """The tokens entering each kept block, (B*n, t*h*w, C) each, and the token grid.

    The last block is not run: no candidate needs its output.
    """
    tokens, grid = model.backbone.embed(x)
    inputs = [tokens]
    for block in model.backbone.blocks[:-1]:
        tokens = block(tokens)
        inputs.append(tokens)
    return inputs, grid


def features_without(model: Detector, inputs: list[torch.Tensor], grid, position: int):
    """Head input (B, C, length) of the model without the block at `position`."""
    tokens = inputs[position]
    for block in model.backbone.blocks[position + 1 :]:
        tokens = block(tokens)
    return model.fit_length(model.backbone.pool(tokens, grid))


def candidate_outputs(model: Detector, x: torch.Tensor, prefix: bool = True, dropped=None):
    """Yield (original index, logits, offsets, head input) for each candidate block.

    Args:
        prefix: reuse the block inputs of one full pass and run the head once for all
            candidates (the fast path); otherwise run `dropped[b]` (the model without
            block b) from the frames (the naive path).
    """
    if prefix:
        inputs, grid = block_inputs(model, x)
        kept = list_blocks(model)
        feats = [features_without(model, inputs, grid, p) for p in range(len(kept))]
        # One head call over all candidates: the head is shared, and few large ops run
        # far faster than many small ones on the CPU.
        logits, offsets = model.detect(torch.cat(feats))
        size = x.shape[0]
        for i, index in enumerate(kept):
            part = slice(i * size, (i + 1) * size)
            yield index, logits[part], offsets[part], feats[i]
        return
    for index, smaller in dropped.items():
        feats = smaller.features(x)
        yield (index, *smaller.detect(feats), feats)


class _Tally:
    """Per-candidate running totals of one criterion over this rank's batches."""

    def __init__(self, model: Detector, dataset: TadDataset, criterion: str):
        self.model, self.dataset, self.criterion = model, dataset, criterion
        self.batcher = Batcher(model, dataset)
        self.positions = model.positions.cpu().numpy()
        self.sums: dict[int, list[float]] = {}  # loss / mse: [sum, count]
        self.parts: dict[int, dict[str, list]] = {}  # map: per-window candidates per video

    def add(self, index, logits, offsets, feats, video, batch, targets, teacher_feats):
        if self.criterion == "map":
            self._add_detections(index, logits, offsets, video, batch)
            return
        if self.criterion == "loss":
            value = detection_loss(logits, offsets, *targets)["loss"].item()
        else:
            value = F.mse_loss(feats, teacher_feats).item()
        total = self.sums.setdefault(index, [0.0, 0])
        total[0] += value * len(batch)
        total[1] += len(batch)

    def _add_detections(self, index, logits, offsets, video, batch):
        scores = torch.sigmoid(logits).cpu().numpy()
        segments = decode_segments(self.model.positions, offsets).cpu().numpy()
        parts = self.parts.setdefault(index, {}).setdefault(video.video_id, [])
        parts += window_parts(
            self.dataset, video, batch, scores, segments, self.positions, self.model.config.post
        )

    def local_result(self):
        """What this rank sends: detections per video (map) or [sum, count] (loss, mse)."""
        if self.criterion != "map":
            return self.sums
        names, post = self.model.config.class_names, self.model.config.post
        return {
            index: {vid: merge_windows(parts, post, names) for vid, parts in v.items()}
            for index, v in self.parts.items()
        }


def _combine(criterion: str, results: list[dict], videos, thresholds,
             label: str | None = None) -> dict[int, float]:  # fmt: skip
    """Scores from every rank's partial results (`label`: the class every ground-truth
    segment takes, a class-agnostic model's)."""
    if criterion != "map":
        sums: dict[int, list[float]] = {}
        for part in results:
            for index, (s, n) in part.items():
                total = sums.setdefault(index, [0.0, 0])
                total[0] += s
                total[1] += n
        return {index: s / n for index, (s, n) in sorted(sums.items())}
    truth = ground_truth(videos, label)
    scores = {}
    for index in sorted(results[0]):
        predictions = {vid: [] for vid in truth}
        for part in results:
            predictions.update(part.get(index, {}))
        scores[index] = evaluate_detections(truth, predictions, thresholds).average_mAP
    return scores


@torch.no_grad()
def score_candidates(
    model: Detector,
    dataset: TadDataset,
    videos: list[VideoInfo],
    criterion: str = "map",
    teacher: Detector | None = None,
    prefix: bool = True,
    batch_size: int = 8,
    device: str = "cpu",
    thresholds=None,
    progress: Callable | None = None,
) -> dict[int, float]:
    """Score every kept block b by the model without b on `videos`.

    Args:
        criterion: "map" (average mAP, higher is better), "loss" (task loss) or "mse"
            (head-input MSE against `teacher`), both lower is better.
        prefix: use prefix reuse (same result, less work); False is the naive reference.
        thresholds: tIoU thresholds of the "map" criterion; default the model's. Candidates
            are post-processed with the model's post-processing (and a class-agnostic
            model scored class-agnostically, `DetectorConfig.truth_label`).
    Returns:
        {original block index: score}. Under torchrun, videos are split across ranks and
        every rank returns the same scores.
    """
    model = model.to(device).eval()
    teacher = teacher.to(device).eval() if teacher is not None else None
    dropped = None if prefix else {b: drop_block(model, b) for b in list_blocks(model)}
    tally = _Tally(model, dataset, criterion)
    mine = distributed.shard(videos)
    for done, video in enumerate(mine, 1):
        for batch in window_batches(dataset, video, batch_size):
            x = torch.from_numpy(np.stack([w[1] for w in batch])).to(device)
            targets = None
            if criterion == "loss":
                targets = [t.to(device) for t in tally.batcher.make([w[1:] for w in batch])[1:]]
            t_feats = teacher.features(x) if criterion == "mse" else None
            for index, logits, offsets, feats in candidate_outputs(model, x, prefix, dropped):
                tally.add(index, logits, offsets, feats, video, batch, targets, t_feats)
        if progress:
            progress("score", done, len(mine))
    thresholds = thresholds or model.config.thresholds
    results = distributed.gather(tally.local_result())
    return _combine(criterion, results, videos, thresholds, model.config.truth_label)


def best_candidates(scores: dict[int, float], criterion: str, count: int = 1) -> list[int]:
    """The `count` blocks whose removal hurts least (ties: the lower index first)."""
    sign = -1.0 if HIGHER_IS_BETTER[criterion] else 1.0
    return sorted(scores, key=lambda b: (sign * scores[b], b))[:count]
