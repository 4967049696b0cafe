"""Options of `pbd-deploy compress` and `pbd-deploy prune`, one field per option, checked up front."""

from __future__ import annotations

from dataclasses import dataclass, field

from pbd_deploy.core import config as config_io
from pbd_deploy.core.annotations import PAST_END_POLICIES, subset_roles
from pbd_deploy.core.config import check_workers
from pbd_deploy.errors import PbdError

CRITERIA = ("map", "loss", "mse")
SCHEDULES = ("progressive", "one-shot")
IMPORTANCES = ("magnitude", "taylor", "hessian")  # Torch-Pruning's estimators
LORA_TARGETS = ("attn.qkv", "attn.proj")  # the default Linear layers of each block to adapt


@dataclass
class RecoveryConfig:
    """Recovery after a compression step: LoRA + cross-depth alignment, best epoch on val.

    Shared by `BlockDropConfig` and `ChannelPruneConfig`; `calib_fraction` is the part of
    the training split that scores blocks or channels; `past_end` is what loading the data
    set does with segments ending after their video (error, keep or drop); `subsets` which
    split role each annotation subset feeds (`core.annotations.subset_roles`).
    """

    calib_fraction: float = 0.25
    epochs: int = 2  # per dropped block (compress) or for the whole pruning (prune); 0 = none
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    windows_per_video: int = 2  # recovery fine-tunes: half the windows of training
    lora_rank: int | None = None  # default: width // 4
    lora_alpha: float | None = None  # default: equal to the rank (scale 1)
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    w_feat: float = 1.0
    w_cls: float = 1.0
    w_reg: float = 1.0
    temperature: float = 3.5
    device: str = "cpu"
    seed: int = 0
    workers: int = 0  # DataLoader worker processes for recovery and validation
    precision: str = "fp32"  # recovery (student and teacher): fp32, bf16 or fp16 (CUDA)
    checkpointing: bool = False  # activation checkpointing of the student's blocks
    recipe: str = "quick"  # quick or paper (train.RECIPES): also EMA, decay groups, augment
    past_end: str = "error"
    subsets: str = "default"

    @classmethod
    def from_recipe(cls, recipe: str = "quick", **options):
        """The named preset (train.RECIPES: lr, epochs, warm-up) with `options` on top."""
        from pbd_deploy.train import recipe_options

        return cls(**{**recipe_options(recipe, cls), **options, "recipe": recipe})

    def __post_init__(self):
        if self.past_end not in PAST_END_POLICIES:
            raise PbdError(f"unknown --past-end {self.past_end!r}; use keep, drop or error")
        subset_roles(self.subsets)
        if not 0.0 < self.calib_fraction <= 1.0:
            raise PbdError(f"--calib-fraction must be in (0, 1]; got {self.calib_fraction}")
        if self.epochs < 0:
            raise PbdError("--epochs must be 0 (no recovery) or more")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise PbdError("--lora-rank must be at least 1")
        if not self.lora_targets:
            raise PbdError("--lora-targets needs at least one layer name, e.g. attn.qkv")
        for name in ("w_feat", "w_cls", "w_reg"):
            if getattr(self, name) < 0:
                raise PbdError(f"--{name.replace('_', '-')} must not be negative")
        if self.temperature <= 0:
            raise PbdError("--temperature must be positive")
        from pbd_deploy.train import check_device, check_precision, recipe_options

        recipe_options(self.recipe, type(self))  # a known name
        check_device(self.device)
        check_workers(self.workers)
        check_precision(self.precision, self.device)

    def to_dict(self) -> dict:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = ""):
        return config_io.from_dict(cls, data, where)


@dataclass
class BlockDropConfig(RecoveryConfig):
    """Progressive Block Drop: budget, scoring, recovery (LoRA + cross-depth alignment).

    Budget: `drop` blocks, or blocks until at most `target_macs` of the MACs remain, or
    exactly `drop_indices` (original indices, no scoring); default depth // 4 blocks.
    """

    drop: int | None = None
    target_macs: float | None = None
    drop_indices: list[int] | None = None
    criterion: str = "map"
    schedule: str = "progressive"  # one-shot: score once, drop the whole budget, recover once
    max_map_drop: float | None = None  # in average-mAP points (0.01 = one point)

    def __post_init__(self):
        chosen = [
            n for n in ("drop", "target_macs", "drop_indices") if getattr(self, n) is not None
        ]
        if len(chosen) > 1:
            names = " and ".join("--" + n.replace("_", "-") for n in chosen)
            raise PbdError(f"give only one budget, not {names}")
        if self.drop is not None and self.drop < 1:
            raise PbdError(f"--drop must be at least 1 (got {self.drop})")
        _check_fraction(self.target_macs)
        if self.drop_indices is not None:
            repeated = sorted({i for i in self.drop_indices if self.drop_indices.count(i) > 1})
            if repeated or not self.drop_indices:
                raise PbdError(f"--drop-indices must list distinct blocks; repeated: {repeated}")
        if self.criterion not in CRITERIA:
            raise PbdError(
                f"unknown --criterion {self.criterion!r}; use one of {', '.join(CRITERIA)}"
            )
        if self.schedule not in SCHEDULES:
            raise PbdError(f"unknown schedule {self.schedule!r}; use one of {SCHEDULES}")
        super().__post_init__()


@dataclass
class ChannelPruneConfig(RecoveryConfig):
    """Channel pruning: attention heads and MLP hidden units of the kept blocks.

    Budget: `target_macs` (fraction of the input model's MACs left), or explicit widths:
    `heads` kept per block and/or `mlp_ratio` (MLP hidden units kept = width * ratio per
    block). `uniform`: every block the same; otherwise the same totals are allocated across
    blocks by importance. Importance (Torch-Pruning's estimators) is computed on at most
    `calib_windows` windows of the calibration split.
    """

    target_macs: float | None = None
    heads: int | None = None
    mlp_ratio: float | None = None
    uniform: bool = False
    importance: str = "taylor"
    calib_windows: int = 64
    epochs: int = 4  # one recovery for the whole pruning

    def __post_init__(self):
        if self.target_macs is not None and (self.heads, self.mlp_ratio) != (None, None):
            raise PbdError("give --target-macs or --heads/--mlp-ratio, not both")
        if (self.target_macs, self.heads, self.mlp_ratio) == (None, None, None):
            raise PbdError("give a budget: --target-macs R, or --heads H and/or --mlp-ratio r")
        _check_fraction(self.target_macs)
        if self.heads is not None and self.heads < 1:
            raise PbdError(f"--heads is the heads kept per block, at least 1; got {self.heads}")
        if self.mlp_ratio is not None and self.mlp_ratio <= 0:
            raise PbdError(f"--mlp-ratio must be positive; got {self.mlp_ratio}")
        if self.importance not in IMPORTANCES:
            raise PbdError(
                f"unknown --importance {self.importance!r}; use one of {', '.join(IMPORTANCES)}"
            )
        if self.calib_windows < 1:
            raise PbdError("--calib-windows must be at least 1")
        super().__post_init__()


def _check_fraction(target: float | None) -> None:
    if target is not None and not 0.0 < target < 1.0:
        raise PbdError(f"--target-macs is the fraction of MACs kept, in (0, 1); got {target}")
