"""Supervised training of a detector: AdamW, warm-up + cosine, clipping, optional EMA.

The checkpoint kept is the one with the best average mAP on the validation split; the
test split is never looked at.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pbd_deploy.core.atomic import prepare_output
from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.inference import Progress, evaluate_model
from pbd_deploy.models.actionformer import assign_targets, detection_loss, point_grid
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import add_history, load_model, save_model
from pbd_deploy.models.registry import model_config

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Options of `pbd-deploy train` (one field per command-line option)."""

    epochs: int = 22
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    clip_grad: float = 1.0
    ema: bool = False
    ema_decay: float = 0.999
    windows_per_video: int = 4
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "windows_per_video"):
            if getattr(self, name) < 1:
                raise PbdError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr <= 0:
            raise PbdError("--lr must be positive")
        check_device(self.device)

    def to_dict(self) -> dict:
        return asdict(self)


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work starts."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PbdError(
            f"--device {device} requested but no CUDA GPU is available; use --device cpu"
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise PbdError(f"unknown --device {device!r}; use cpu or cuda[:N]")


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Batcher:
    """Turns sampled windows into (inputs, class targets, offset targets, valid mask)."""

    def __init__(self, model: Detector, dataset: TadDataset):
        self.model, self.dataset = model, dataset
        self.grid = point_grid(model.config.head)

    def make(self, samples) -> tuple[torch.Tensor, ...]:
        xs, cls_t, reg_t, valid = [], [], [], []
        for x, segs, labels, valid_points in samples:
            cls, reg = assign_targets(
                torch.from_numpy(segs),
                torch.from_numpy(labels),
                self.model.num_classes,
                self.model.config.head,
                self.grid,
            )
            xs.append(torch.from_numpy(x))
            cls_t.append(cls)
            reg_t.append(reg)
            valid.append(self.grid[0] < valid_points)
        return torch.stack(xs), torch.stack(cls_t), torch.stack(reg_t), torch.stack(valid)


def epoch_samples(dataset: TadDataset, config: TrainConfig, rng: np.random.Generator):
    """The shuffled training windows of one epoch."""
    videos = dataset.split("train") * config.windows_per_video
    order = rng.permutation(len(videos))
    return [dataset.training_window(videos[i], rng) for i in order]


def task_loss(model, x, cls_t, reg_t, valid) -> dict[str, torch.Tensor]:
    """The detection loss of `model` on one batch (the default training objective)."""
    return detection_loss(*model(x), cls_t, reg_t, valid)


class Trainer:
    """The optimisation state of one training run: optimizer, schedule, optional EMA.

    `loss_fn(model, x, cls_t, reg_t, valid) -> {"loss": ..., other terms}` is the objective
    (compression passes a distillation loss); only parameters that require grad are trained.
    """

    def __init__(self, model, dataset: TadDataset, config: TrainConfig, loss_fn=task_loss):
        self.model, self.config, self.loss_fn = model, config, loss_fn
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.lr, weight_decay=config.weight_decay
        )
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
            if config.ema
            else None
        )
        self.batcher = Batcher(getattr(model, "module", model), dataset)  # unwrap DDP
        windows = len(dataset.split("train")) * config.windows_per_video
        self.steps_per_epoch = math.ceil(windows / config.batch_size)
        self.total = self.steps_per_epoch * config.epochs
        self.warmup = int(self.steps_per_epoch * config.warmup_epochs)
        self.step = 0

    @property
    def scored(self) -> Detector:
        """The weights that are evaluated and kept: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def update(self, samples) -> dict[str, float]:
        """One optimisation step on a batch of sampled windows; returns the loss terms."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * lr_factor(self.step, self.total, self.warmup)
        device = self.config.device
        x, cls_t, reg_t, valid = (t.to(device) for t in self.batcher.make(samples))
        losses = self.loss_fn(self.model, x, cls_t, reg_t, valid)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_grad)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return {k: v.item() for k, v in losses.items()}

    def epoch(
        self, samples, epoch: int, progress: Progress | None, shard=lambda batch: batch
    ) -> dict[str, float]:
        """Train on one epoch's windows; returns the mean loss terms.

        `shard` picks this process's part of each batch under data-parallel training.
        """
        self.model.train()
        sums: dict[str, float] = {}
        size = self.config.batch_size
        for i in range(0, len(samples), size):
            batch = shard(samples[i : i + size])
            if not batch:
                continue
            losses = self.update(batch)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress:
                progress("train", self.step, self.total, epoch=epoch, loss=losses["loss"])
        return {k: v / self.steps_per_epoch for k, v in sums.items()}


def train(
    model: Detector, dataset: TadDataset, config: TrainConfig, progress: Progress | None = None
) -> tuple[Detector, dict]:
    """Train `model` on the train split; return the best-on-val copy and a summary."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    dataset.split("val")  # fail now, not after an epoch, when there is no validation split
    trainer = Trainer(model.to(config.device), dataset, config)
    best = {"val_mAP": -1.0, "epoch": 0, "state": None}
    epochs, started = [], time.time()
    for epoch in range(1, config.epochs + 1):
        losses = trainer.epoch(epoch_samples(dataset, config, rng), epoch, progress)
        result, _ = evaluate_model(trainer.scored, dataset, "val", device=config.device)
        record = {
            "epoch": epoch,
            **losses,
            "val_mAP": result.average_mAP,
            "elapsed_s": time.time() - started,
        }
        epochs.append(record)
        log.info("epoch %d: %s", epoch, record)
        if progress:
            progress("epoch", epoch, config.epochs, **record)
        if result.average_mAP > best["val_mAP"]:
            best = {
                "val_mAP": result.average_mAP,
                "epoch": epoch,
                "state": copy.deepcopy(trainer.scored.state_dict()),
            }
    model.load_state_dict(best["state"])
    summary = {
        "best_epoch": best["epoch"],
        "best_val_mAP": best["val_mAP"],
        "epochs": epochs,
        "wall_s": time.time() - started,
        "config": config.to_dict(),
    }
    return model.eval(), summary


def train_model_dir(
    data_dir,
    model: str,
    out_dir,
    config: TrainConfig,
    force: bool = False,
    progress: Progress | None = None,
    past_end: str = "error",
) -> dict:
    """`pbd-deploy train`: build (or load) a model, train it on DATA, save it to `out_dir`.

    Args:
        model: a registry name (e.g. "videomae-tiny") or an existing model directory to
            fine-tune (e.g. one written by `convert`).
    Returns:
        The training summary (also stored in the model's history and `train_log.json`).
    """
    prepare_output(out_dir, force)
    torch.manual_seed(config.seed)  # the fresh model's initialisation is part of the run
    if Path(model).is_dir():
        detector = load_model(model)
    else:
        classes = load_annotations(
            Path(data_dir) / "annotations.json", past_end=past_end
        ).class_names
        detector = Detector(model_config(model, classes))
    dataset = TadDataset(data_dir, detector.config, past_end)
    detector, summary = train(detector, dataset, config, progress)
    add_history(
        detector,
        "train",
        data=str(data_dir),
        best_epoch=summary["best_epoch"],
        val_mAP=summary["best_val_mAP"],
        wall_s=round(summary["wall_s"], 1),
        config=config.to_dict(),
    )
    save_model(detector, out_dir, force, extra={"train_log.json": json.dumps(summary, indent=2)})
    return summary
