"""Write an output directory all at once: built under a temporary name, renamed when complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from pbd_deploy.errors import PbdError


def prepare_output(out_dir: str | Path, force: bool = False, marker: str | None = None) -> Path:
    """Check that `out_dir` may be written, before any work starts.

    An existing directory is refused unless `force`; with `force` it is replaced only if it
    is empty or holds `marker` (a file our own outputs have), so a mistyped path never
    wipes someone's home directory.
    """
    out = Path(out_dir).resolve()  # a name is needed for the sibling: "." has none
    if not out.exists():
        return out
    if not force:
        raise PbdError(f"{out} already exists; choose another output or pass --force to overwrite")
    ours = out.is_dir() and (not any(out.iterdir()) or (marker and (out / marker).is_file()))
    if not ours:
        raise PbdError(
            f"{out} does not look like a pbd-deploy output (no {marker}); refusing to overwrite it"
        )
    return out


def write_atomically(
    out_dir: str | Path,
    write: Callable[[Path], None],
    force: bool = False,
    marker: str | None = None,
) -> Path:
    """Call `write(tmp_dir)`, then move tmp_dir to `out_dir`; returns `out_dir`.

    A crash or error leaves any previous `out_dir` untouched and no half-written one.
    """
    out = prepare_output(out_dir, force, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        prepare_output(out, force, marker)  # the target may have appeared meanwhile
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            try:
                tmp.rename(out)
            except OSError:
                old.rename(out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
