"""Supervised training of a detector: AdamW, warm-up + cosine, clipping, optional EMA.

The checkpoint kept is the one with the best average mAP on the validation split; the
test split is never looked at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pbd_deploy.core.annotations import PAST_END_POLICIES, load_annotations, subset_roles
from pbd_deploy.core.atomic import output_lock, prepare_output
from pbd_deploy.core.config import check_workers
from pbd_deploy.data import distributed
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.data.loader import TrainLoader
from pbd_deploy.data.resume import RunState, cpu_state, fingerprint
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.inference import Progress, evaluate_model
from pbd_deploy.models.actionformer import detection_loss
from pbd_deploy.models.detector import Detector, window_valid
from pbd_deploy.models.io import CONFIG_FILE, add_history, load_model, save_model
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
    workers: int = 0  # DataLoader worker processes (0: load in the training process)
    precision: str = "fp32"  # fp32, bf16 (autocast) or fp16 (autocast + GradScaler, CUDA)
    checkpointing: bool = False  # recompute backbone block activations in backward
    past_end: str = "error"  # segments ending after their video: error, keep or drop
    subsets: str = "default"  # split role of each annotation subset (core.annotations)
    recipe: str = "quick"  # the preset these options started from (see RECIPES)
    decay_norms: bool = True  # False: no weight decay on norms, biases and scales
    drop_path: float | None = None  # rising linearly with depth to this; None: the model's
    augment: bool = False  # RandomResizedCrop, flip, colour jitter, truncation crop ratio

    @classmethod
    def from_recipe(cls, recipe: str = "quick", **options) -> "TrainConfig":
        """The named preset (RECIPES) with `options` on top."""
        return cls(**{**recipe_options(recipe, cls), **options, "recipe": recipe})

    def __post_init__(self):
        recipe_options(self.recipe, type(self))  # a known name
        for name in ("epochs", "batch_size", "windows_per_video"):
            if getattr(self, name) < 1:
                raise PbdError(f"--{name.replace('_', '-')} must be at least 1")
        check_workers(self.workers)
        check_precision(self.precision, self.device)
        if self.lr <= 0:
            raise PbdError("--lr must be positive")
        check_device(self.device)
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            raise PbdError("--weight-decay and --warmup-epochs must not be negative")
        if self.clip_grad <= 0:
            raise PbdError(f"--clip-grad must be positive, got {self.clip_grad}")
        if not 0 <= self.ema_decay < 1:
            raise PbdError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.past_end not in PAST_END_POLICIES:
            raise PbdError(f"unknown --past-end {self.past_end!r}; use keep, drop or error")
        subset_roles(self.subsets)

    def to_dict(self) -> dict:
        return asdict(self)


# quick: CPU-sized, the defaults above (the quickstart's figures). paper: the published
# recovery schedule of Progressive Block Drop (official code, from AdaTAD's THUMOS14 recipe).
RECIPES = {
    "quick": {},
    "paper": dict(
        lr=1e-4, epochs=60, warmup_epochs=5.0, ema=True, decay_norms=False, drop_path=0.1,
        augment=True,
    ),
}  # fmt: skip


def recipe_options(recipe: str, config_class) -> dict:
    """The preset's values for the fields `config_class` has."""
    if recipe not in RECIPES:
        raise PbdError(f"unknown --recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    names = {f.name for f in dataclasses.fields(config_class)}
    return {k: v for k, v in RECIPES[recipe].items() if k in names}


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work starts."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PbdError(
            f"--device {device} requested but no CUDA GPU is available; use --device cpu"
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise PbdError(f"unknown --device {device!r}; use cpu or cuda[:N]")


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: str) -> None:
    """Refuse an unknown precision, or fp16 where there is no GPU, before any work."""
    if precision not in PRECISIONS:
        raise PbdError(f"unknown --precision {precision!r}; use fp32, bf16 or fp16")
    if precision == "fp16" and not device.startswith("cuda"):
        raise PbdError("--precision fp16 needs --device cuda (on the CPU use bf16 or fp32)")


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def task_loss(model, x, cls_t, reg_t, valid) -> dict[str, torch.Tensor]:
    """The detection loss of `model` on one batch (the default training objective)."""
    return detection_loss(*model(x, valid=window_valid(model, valid)), cls_t, reg_t, valid)


def param_groups(model, weight_decay: float, decay_norms: bool = True) -> list[dict]:
    """AdamW groups of the trainable parameters; with `decay_norms` False, norms, biases
    and scales (every tensor of one dimension) get no weight decay."""
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 and not decay_norms else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    return groups + [{"params": plain, "weight_decay": 0.0}] if plain else groups


def depth_wise_drop_path(model, rate: float) -> None:
    """Drop path rising linearly from 0 at the first block to `rate` at the last, by the
    blocks' original indices (a compressed model keeps its blocks' rates)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return
    last = max(1, backbone.config.depth - 1)
    for block, index in zip(backbone.blocks, backbone.block_indices):
        block.drop_path = rate * index / last


class Trainer:
    """The optimisation state of one training run: optimizer, schedule, optional EMA.

    `loss_fn(model, x, cls_t, reg_t, valid) -> {"loss": ..., other terms}` is the objective
    (compression passes a distillation loss); only parameters that require grad are trained.
    """

    def __init__(self, model, dataset: TadDataset, config: TrainConfig, loss_fn=task_loss):
        self.model, self.config, self.loss_fn = model, config, loss_fn
        self.module = getattr(model, "module", model)  # unwrapped from DDP
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            param_groups(model, config.weight_decay, config.decay_norms), lr=config.lr
        )
        if config.drop_path is not None:
            depth_wise_drop_path(self.module, config.drop_path)
        self.ema = (
            AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
            if config.ema
            else None
        )
        self.loader = TrainLoader(
            dataset, config.batch_size, config.windows_per_video, config.workers, config.device,
            config.augment,
        )  # fmt: skip
        self.steps_per_epoch = len(self.loader)
        backbone = getattr(self.module, "backbone", None)
        if backbone is not None:
            backbone.checkpointing = config.checkpointing
        # fp16 gradients can underflow: scale the loss (a no-op for fp32 and bf16).
        device_type = torch.device(config.device).type
        self.scaler = torch.amp.GradScaler(device_type, enabled=config.precision == "fp16")
        self.autocast = functools.partial(
            torch.autocast,
            device_type,
            dtype=PRECISIONS[config.precision],
            enabled=config.precision != "fp32",
        )
        self.total = self.steps_per_epoch * config.epochs
        self.warmup = int(self.steps_per_epoch * config.warmup_epochs)
        self.step = 0

    @property
    def scored(self) -> Detector:
        """The weights that are evaluated and kept: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.module

    def update(self, batch) -> dict[str, float]:
        """One optimisation step on a batch (inputs, class and offset targets, valid mask);
        returns the loss terms."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * lr_factor(self.step, self.total, self.warmup)
        device = self.config.device
        x, cls_t, reg_t, valid = (t.to(device, non_blocking=True) for t in batch)
        with self.autocast():  # the teacher of a distillation loss runs in it too
            losses = self.loss_fn(self.model, x, cls_t, reg_t, valid)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"].float()).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        self.step += 1
        return {k: v.item() for k, v in losses.items()}

    def epoch(self, rng: np.random.Generator, epoch: int, progress: Progress | None = None):
        """Train on one epoch's windows, drawn with `rng`; returns the mean loss terms."""
        self.model.train()
        sums: dict[str, float] = {}
        for batch in self.loader.epoch(rng):
            losses = self.update(batch)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress:
                progress("train", self.step, self.total, epoch=epoch, loss=losses["loss"])
        return {k: v / self.steps_per_epoch for k, v in sums.items()}


class TrainState(RunState):
    """What `train --resume` continues from, saved after every epoch (data/resume.py)."""

    FRESH = {"epoch": 0, "trainer": None, "rng": None, "best": None, "epochs": [], "wall_s": 0.0}


def _snapshot(trainer: Trainer, rng: np.random.Generator) -> tuple[dict, dict]:
    """The trainer's state (weights, optimizer, schedule step, EMA, loss scaler) and the
    RNG streams, as CPU tensors and plain containers."""
    state = {
        "weights": cpu_state(trainer.module),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "ema": cpu_state(trainer.ema) if trainer.ema is not None else None,
        "step": trainer.step,
    }
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    streams = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "cuda": cuda}
    return state, streams


def _restore(trainer: Trainer, rng: np.random.Generator, state: dict, streams: dict) -> None:
    trainer.module.load_state_dict(state["weights"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scaler.load_state_dict(state["scaler"])
    if trainer.ema is not None:
        trainer.ema.load_state_dict(state["ema"])
    trainer.step = state["step"]
    rng.bit_generator.state = streams["numpy"]
    torch.set_rng_state(streams["torch"])
    if streams["cuda"]:
        torch.cuda.set_rng_state_all(streams["cuda"])


def train(
    model: Detector,
    dataset: TadDataset,
    config: TrainConfig,
    progress: Progress | None = None,
    state_file=None,
    resume: bool = False,
) -> tuple[Detector, dict]:
    """Train `model` on the train split; return the best-on-val copy and a summary.

    Args:
        state_file: where the state is saved after every epoch (None: not saved).
        resume: continue from `state_file`; ends with the same weights as an uninterrupted
            run at the same torch thread count (float sums depend on it).
    """
    options = {**config.to_dict(), "model": fingerprint(model)}
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    dataset.split("val")  # fail now, not after an epoch, when there is no validation split
    state = TrainState.open(state_file, options, resume)
    saved = state.data
    device = distributed.setup(config.device)  # under torchrun: this rank's device
    config = dataclasses.replace(config, device=device)
    trainer = Trainer(distributed.data_parallel(model.to(device)), dataset, config)
    best = {"val_mAP": -1.0, "epoch": 0, "state": None}
    epochs, started = [], time.time()
    if saved["epoch"]:
        _restore(trainer, rng, saved["trainer"], saved["rng"])
        best, epochs, started = saved["best"], saved["epochs"], started - saved["wall_s"]
    for epoch in range(saved["epoch"] + 1, config.epochs + 1):
        losses = trainer.epoch(rng, epoch, progress)
        result, _ = evaluate_model(
            trainer.scored, dataset, "val", device=device, workers=config.workers
        )
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
                "state": cpu_state(trainer.scored),
            }
        trainer_state, streams = _snapshot(trainer, rng)
        saved.update(epoch=epoch, trainer=trainer_state, rng=streams, best=best, epochs=epochs)
        saved["wall_s"] = time.time() - started
        state.save()
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
    resume: bool = False,
) -> dict:
    """`pbd-deploy train`: build (or load) a model, train it on DATA, save it to `out_dir`.

    Args:
        model: a registry name (e.g. "videomae-tiny") or an existing model directory to
            fine-tune (e.g. one written by `convert`).
        resume: continue an interrupted run from its state (`OUT.train-state.pt`, saved
            after every epoch and removed when the model is written).
    Returns:
        The training summary (also stored in the model's history and `train_log.json`).
    """
    out = prepare_output(out_dir, force, marker=CONFIG_FILE)
    state_file = out.with_name(out.name + ".train-state.pt")
    torch.manual_seed(config.seed)  # the fresh model's initialisation is part of the run
    if Path(model).is_dir():
        detector = load_model(model)
    else:
        classes = load_annotations(
            Path(data_dir) / "annotations.json", past_end=config.past_end, subsets=config.subsets
        ).class_names
        detector = Detector(model_config(model, classes))
    dataset = TadDataset(data_dir, detector.config, config.past_end, subsets=config.subsets)
    main = os.environ.get("RANK", "0") == "0"  # torchrun: rank 0 holds the lock and writes
    with output_lock(out_dir) if main else contextlib.nullcontext():
        detector, summary = train(detector, dataset, config, progress, state_file, resume)
        add_history(
            detector,
            "train",
            data=str(data_dir),
            best_epoch=summary["best_epoch"],
            val_mAP=summary["best_val_mAP"],
            wall_s=round(summary["wall_s"], 1),
            config=config.to_dict(),
        )
        if distributed.is_main():  # under torchrun every rank holds the same weights
            log_file = {"train_log.json": json.dumps(summary, indent=2)}
            save_model(detector, out_dir, force, extra=log_file)
            state_file.unlink(missing_ok=True)
        distributed.barrier()
    return summary
