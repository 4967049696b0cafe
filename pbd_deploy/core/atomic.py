"""Every file and directory pbd-deploy writes goes through here: durable, shareable, atomic.

- `write_file(path, data)`: a temporary name in the same directory, written, flushed and
  fsynced, `os.replace`d over `path`, then the directory is fsynced. A crash at any point
  leaves either the old file or the new one, never a mix, and no empty file after a power cut.
- `write_atomically(out_dir, write)`: the same for a whole output directory (every file and
  folder in it fsynced before the rename; an existing one swapped in a single rename).
- `write_with_checksum(path, data, meta_path, meta)`: a binary (a TensorRT engine) and the
  JSON that describes it; the JSON carries the binary's sha256 and is removed before the
  binary is replaced and written after it, so a crash never pairs an engine with the
  metadata of another.
- Permissions follow the umask (0644 files, 0755 directories and executables with umask 022),
  whatever the writer used (safetensors and `mkstemp` create files 0600).
- `output_lock(out)`: one writer per output; a second run is refused in one line, the lock
  of a killed process is taken over.

Temporary names are `.NAME.PID-RANDOM.tmp` beside the target; those of dead processes are
removed the next time the target is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Callable, Iterator, Union

from pbd_deploy.errors import PbdError

log = logging.getLogger(__name__)

Writer = Union[bytes, str, Callable[[Path], None]]


# -- files --------------------------------------------------------------------------------


def write_file(path: str | Path, data: Writer, executable: bool = False, what: str = "") -> Path:
    """Write `data` (bytes, text, or `write(tmp_path)`) to `path` atomically and durably.

    The file gets the umask's permissions (executable ones with `executable`). On any error
    the previous file is untouched and the temporary one removed; OSError (a missing folder,
    a full disk) becomes PbdError "cannot write {what}{path}".
    """
    path = Path(path)
    sweep(path)
    tmp = temporary_name(path)
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        elif isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            data(tmp)
        _finish_file(tmp, executable)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise PbdError(
            f"cannot write {what}{path}: {exc.strerror or exc} (check the folder)"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def check_folder(path: str | Path, option: str) -> None:
    """Refuse, before any work, a file output whose folder does not exist."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise PbdError(f"{option} {path}: folder {folder} does not exist; create it first")


def write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    """`obj` as JSON (with a final newline), written with `write_file`."""
    return write_file(path, json.dumps(obj, indent=indent) + "\n")


def write_with_checksum(
    path: str | Path, data: bytes, meta_path: str | Path, meta: dict, key: str = "sha256"
) -> dict:
    """Write `data` to `path` and `meta` (plus `key`: sha256 of `data`) as JSON to `meta_path`.

    The old metadata is removed first and the new one written last, so at every instant
    the pair on disk is the old one, a binary without metadata (refused by readers), or
    the new one; `check_checksum` catches anything else (a file copied over by hand).
    """
    meta = {**meta, key: hashlib.sha256(data).hexdigest()}
    meta_path = Path(meta_path)
    with contextlib.suppress(FileNotFoundError):
        meta_path.unlink()
        fsync_dir(meta_path.parent)
    write_file(path, data)
    write_json(meta_path, meta)
    return meta


def check_checksum(data: bytes, meta: dict, path: str | Path, key: str = "sha256") -> None:
    """Refuse `data` (read from `path`) when `meta[key]` names another file's sha256."""
    expected = meta.get(key)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise PbdError(
            f"{path} does not match its metadata ({key} differs): it was replaced without "
            "its metadata or is damaged; rebuild it"
        )


# -- directories --------------------------------------------------------------------------


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

    Every file and folder is fsynced and given the umask's permissions before the rename;
    an existing `out_dir` is exchanged with the new one in one rename (Linux), so a crash or
    error leaves the previous `out_dir` untouched and no half-written one.
    """
    out = prepare_output(out_dir, force, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep(out)
    tmp = temporary_name(out)
    tmp.mkdir()
    try:
        write(tmp)
        _finish_tree(tmp)
        prepare_output(out, force, marker)  # the target may have appeared meanwhile
        if not out.exists():
            os.rename(tmp, out)
        elif not _exchange(tmp, out):  # no renameat2: two renames, a short gap
            old = temporary_name(out)
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after an exchange: the old directory
    return out


# -- the lock on an output ----------------------------------------------------------------


def lock_path(out: str | Path) -> Path:
    """OUT -> OUT.lock, beside the output (the output itself is swapped as a whole)."""
    out = Path(out).resolve()
    return out.with_name(out.name + ".lock")


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold the lock on `out` for the block; refuse (PbdError) while another process holds it.

    An flock on OUT.lock: the kernel releases it when its holder dies, so the lock file of a
    killed run is simply taken over. The file says who holds it and is removed on exit.
    """
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise PbdError(
                f"{Path(out)} is being written by another run ({holder or 'unknown process'}, "
                f"lock {path}); wait for it to finish or choose another output"
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break  # still the file at `path`: not one its last holder just removed
        except FileNotFoundError:
            pass
        os.close(fd)
    stale = _read_holder(fd)
    if stale:
        log.info("taking over %s, left by %s (no longer running)", path, stale)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    return ""


# -- helpers ------------------------------------------------------------------------------


def temporary_name(path: Path) -> Path:
    """A fresh `.NAME.PID-RANDOM.tmp` beside `path`."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def sweep(path: Path) -> None:
    """Remove temporaries of `path` left by processes that no longer run (killed writers)."""
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{_glob_escape(path.name)}.*-*.tmp"):
            pid = tmp.name[len(path.name) + 2 :].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable_mode(executable: bool, is_dir: bool = False) -> int:
    """0666 or 0777 (directories, executables) less the umask: 0644 / 0755 with umask 022."""
    return (0o777 if executable or is_dir else 0o666) & ~current_umask()


def _finish_file(path: Path, executable: bool = False) -> None:
    mode = os.stat(path).st_mode
    os.chmod(path, shareable_mode(executable or bool(mode & 0o100)))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_tree(root: Path) -> None:
    # Files first, then each folder (its entries), deepest first, then the root itself.
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = Path(folder, name)
            if not p.is_symlink():
                _finish_file(p)
        os.chmod(folder, shareable_mode(False, is_dir=True))
        fsync_dir(Path(folder))


def fsync_dir(folder: Path) -> None:
    """fsync a directory so that the names created or renamed in it survive a power cut."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems (e.g. certain network mounts) refuse it
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic rename (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))
