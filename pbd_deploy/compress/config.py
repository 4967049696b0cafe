"""Options of `pbd-deploy compress`, one field per command-line option, checked up front."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pbd_deploy.errors import PbdError

CRITERIA = ("map", "loss", "mse")
SCHEDULES = ("progressive", "one-shot")


@dataclass
class BlockDropConfig:
    """Progressive Block Drop: budget, scoring, recovery (LoRA + cross-depth alignment).

    Budget: `drop` blocks, or blocks until at most `target_macs` of the MACs remain, or
    exactly `drop_indices` (original indices, no scoring); default depth // 4 blocks.
    """

    drop: int | None = None
    target_macs: float | None = None
    drop_indices: list[int] | None = None
    criterion: str = "map"
    calib_fraction: float = 0.25
    schedule: str = "progressive"  # one-shot: score once, drop the whole budget, recover once
    epochs: int = 2  # per dropped block; 0 = no recovery
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    windows_per_video: int = 2  # recovery fine-tunes: half the windows of training
    lora_rank: int | None = None  # default: width // 4
    lora_alpha: float | None = None  # default: equal to the rank (scale 1)
    lora_targets: list[str] = field(default_factory=lambda: ["attn.qkv", "attn.proj"])
    w_feat: float = 1.0
    w_cls: float = 1.0
    w_reg: float = 1.0
    temperature: float = 3.5
    max_map_drop: float | None = None  # in average-mAP points (0.01 = one point)
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self):
        chosen = [
            n for n in ("drop", "target_macs", "drop_indices") if getattr(self, n) is not None
        ]
        if len(chosen) > 1:
            names = " and ".join("--" + n.replace("_", "-") for n in chosen)
            raise PbdError(f"give only one budget, not {names}")
        if self.drop is not None and self.drop < 1:
            raise PbdError(f"--drop must be at least 1 (got {self.drop})")
        if self.target_macs is not None and not 0.0 < self.target_macs < 1.0:
            raise PbdError(
                f"--target-macs is the fraction of MACs kept, in (0, 1); got {self.target_macs}"
            )
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
        from pbd_deploy.train import check_device

        check_device(self.device)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BlockDropConfig":
        return cls(**data)
