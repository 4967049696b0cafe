"""torch.distributed under torchrun: who am I, share results, wrap for data parallelism.

Without torchrun (no WORLD_SIZE) everything degrades to a single process, so the same code
runs `pbd-deploy compress` and `torchrun --nproc_per_node N -m pbd_deploy compress`.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist


def setup(device: str) -> str:
    """Join the process group torchrun describes (if any); returns this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        # Leave the group before the interpreter exits: a process group torn down by its
        # destructor instead (gloo's threads still joinable) can abort a rank with
        # "terminate called without an active exception".
        atexit.register(_leave)
    if device.startswith("cuda") and dist.is_initialized():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return device


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def gather(obj) -> list:
    """Every rank's `obj`, in rank order (a one-element list without torchrun)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard(items: list) -> list:
    """This rank's share of `items` (every world-th, starting at the rank)."""
    return items[rank() :: world()]


def data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """`model` wrapped in DDP when several processes train, else unchanged."""
    if not dist.is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids)
