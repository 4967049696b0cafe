"""How many blocks to drop, checked against the model before any work starts."""

from __future__ import annotations

from dataclasses import dataclass

from pbd_deploy.compress.blocks import block_macs
from pbd_deploy.compress.config import BlockDropConfig
from pbd_deploy.errors import PbdError
from pbd_deploy.models.complexity import count_macs
from pbd_deploy.models.detector import DetectorConfig


@dataclass
class Budget:
    """Drop `count` blocks, or exactly `indices`, or until MACs <= `max_macs`."""

    count: int | None = None
    indices: list[int] | None = None
    max_macs: int | None = None

    def remaining(self, config: DetectorConfig, dropped: list[int]) -> int:
        """Blocks still to drop from a model with `config` after `dropped` went (0: done)."""
        if self.indices is not None:
            return len(self.indices) - len(dropped)
        if self.count is not None:
            return self.count - len(dropped)
        return len(_blocks_to_reach(config, self.max_macs))

    def select(self, config: DetectorConfig, ranked: list[int], dropped: list[int], count: int):
        """The next `count` blocks: from `indices`, or the best-ranked (enough for max_macs)."""
        if self.indices is not None:
            return self.indices[len(dropped) : len(dropped) + count]
        if self.max_macs is None:
            return ranked[:count]
        macs, total = block_macs(config), count_macs(config)["total"]
        chosen = []
        for index in ranked:
            if total <= self.max_macs or len(chosen) == count:
                break
            chosen.append(index)
            total -= macs[index]
        return chosen


def plan_budget(config: DetectorConfig, options: BlockDropConfig) -> Budget:
    """The budget of `options` for a model with `config`; PbdError if it cannot be met."""
    if config.backbone is None:
        raise PbdError("compress needs a model with a backbone; feature-mode models have no blocks")
    kept = list(config.backbone.block_indices)
    droppable = len(kept) - 1  # one block must stay
    if options.drop_indices is not None:
        outside = [i for i in options.drop_indices if i not in kept]
        if outside:
            raise PbdError(
                f"--drop-indices {outside} are not blocks of this model; its kept blocks are {kept}"
            )
        if len(options.drop_indices) > droppable:
            raise PbdError(f"--drop-indices would remove all {len(kept)} blocks; keep at least one")
        return Budget(indices=list(options.drop_indices))
    if options.target_macs is not None:
        limit = int(options.target_macs * count_macs(config)["total"])
        needed = _blocks_to_reach(config, limit)
        if needed is None:
            best = _fraction_left(config, droppable)
            raise PbdError(
                f"--target-macs {options.target_macs} cannot be reached: dropping {droppable} "
                f"of {len(kept)} blocks still keeps {best:.3f} of the MACs (patch embedding "
                "and head stay); raise the target"
            )
        return Budget(max_macs=limit)
    count = options.drop if options.drop is not None else len(kept) // 4
    if count > droppable:
        raise PbdError(
            f"--drop {count} is more than the {droppable} blocks that can be dropped "
            f"(the model has {len(kept)}; one must stay)"
        )
    if count < 1:
        raise PbdError(f"the model has only {len(kept)} blocks; pass --drop N explicitly")
    return Budget(count=count)


def _blocks_to_reach(config: DetectorConfig, limit: int) -> list[int] | None:
    """The fewest blocks whose removal brings MACs to `limit` (largest first), or None."""
    macs, total = block_macs(config), count_macs(config)["total"]
    order = sorted(macs, key=macs.get, reverse=True)[:-1]  # one must stay
    chosen = []
    for index in order:
        if total <= limit:
            return chosen
        chosen.append(index)
        total -= macs[index]
    return chosen if total <= limit else None


def _fraction_left(config: DetectorConfig, count: int) -> float:
    macs, total = block_macs(config), count_macs(config)["total"]
    return (total - sum(sorted(macs.values(), reverse=True)[:count])) / total
