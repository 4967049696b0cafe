"""The resumable state of a long run (train, compress): one file, replaced atomically.

It holds the options the run was made with and whatever the run needs to continue where it
stopped (weights, optimizer, RNG streams, progress); `--resume` refuses a state made with
other options. Written by core/atomic (fsync, rename) after each phase; loaded with
`torch.load(weights_only=True)`: tensors and plain containers only, no arbitrary pickle.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import torch

from pbd_deploy.core.atomic import write_file
from pbd_deploy.data import distributed
from pbd_deploy.errors import PbdError, reason

IGNORED_OPTIONS = ("device", "workers")  # may change between the interrupted and resumed run


def fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's weights, to refuse resuming from another model's state."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


class RunState:
    """The state dict and where it lives; only rank 0 writes it.

    A subclass names what a fresh run starts with in `FRESH` (copied per run).
    """

    FRESH: dict = {}

    def __init__(self, path: Path | None, options: dict):
        self.path = Path(path) if path is not None else None  # None: in memory only
        self.data = {"options": options, **copy.deepcopy(self.FRESH)}

    @classmethod
    def open(cls, path, options: dict, resume: bool) -> "RunState":
        """A fresh state, or the saved one when resuming (checked against `options`)."""
        state = cls(path, options)
        if path is None:
            if resume:
                raise PbdError("resume needs the state file of the interrupted run")
            return state
        exists = state.path.is_file()
        if not resume:
            if exists:
                raise PbdError(
                    f"{state.path} holds the state of an interrupted run; pass --resume to "
                    "continue it, or delete the file to start over"
                )
            return state
        if not exists:
            raise PbdError(f"--resume: no saved state at {state.path}; run without --resume")
        try:
            state.data = torch.load(state.path, weights_only=True)
        except Exception as exc:  # any unreadable file is the same user problem
            raise PbdError(
                f"--resume: {state.path} is unreadable ({reason(exc)}); delete it"
            ) from None
        state._check(options)
        return state

    def _check(self, options: dict) -> None:
        saved = self.data["options"]
        changed = [
            f"{k}: {saved.get(k)!r} -> {options.get(k)!r}"
            for k in sorted(set(saved) | set(options))
            if k not in IGNORED_OPTIONS and saved.get(k) != options.get(k)
        ]
        if changed:
            raise PbdError(
                f"--resume: {self.path} was made with other options ({'; '.join(changed)}); "
                "rerun with the original options, or without --resume after deleting it"
            )

    def save(self) -> None:
        """Write the state atomically and durably (core/atomic)."""
        if self.path is not None and distributed.is_main():
            write_file(self.path, lambda tmp: torch.save(self.data, tmp))
        distributed.barrier()


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the module's state dict."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
