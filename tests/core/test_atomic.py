"""core/atomic.py: a writer failing between any two steps leaves the previous output intact,
files are readable by other users, temporaries of killed writers are swept, one lock per output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pbd_deploy.core import atomic
from pbd_deploy.errors import PbdError


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


class Boom(Exception):
    pass


def _fail_at(monkeypatch, name: str):
    """Make one step of the writer (os.fsync, os.replace, os.rename, os.chmod) raise."""
    target = {"fsync": os, "replace": os, "rename": os, "chmod": os}[name]

    def boom(*args, **kwargs):
        raise Boom(name)

    monkeypatch.setattr(target, name, boom)


@pytest.mark.parametrize("step", ["write", "chmod", "fsync", "replace"])
def test_file_failing_between_steps_keeps_the_old_file(tmp_path, monkeypatch, step):
    path = tmp_path / "out.json"
    atomic.write_file(path, "old\n")

    def write(tmp: Path):
        tmp.write_text("new, half")
        if step == "write":
            raise Boom("write")

    if step != "write":
        _fail_at(monkeypatch, step)
    with pytest.raises(Boom):
        atomic.write_file(path, write)
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_file_order_is_write_fsync_chmod_replace_then_dir_fsync(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(a, b):
        calls.append("replace")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic.write_file(tmp_path / "a.bin", b"\x00\x01")
    assert calls == ["fsync file", "replace", "fsync dir"]
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"


def test_permissions_follow_the_umask(tmp_path, umask022):
    def private(tmp: Path):  # what safetensors and mkstemp do
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)

    assert _mode(atomic.write_file(tmp_path / "w.safetensors", private)) == 0o644
    assert _mode(atomic.write_file(tmp_path / "run.sh", "#!/bin/sh\n", executable=True)) == 0o755

    def tree(tmp: Path):
        private(tmp / "model.safetensors")
        (tmp / "sub").mkdir(mode=0o700)
        private(tmp / "sub" / "x")
        (tmp / "build.sh").write_text("#!/bin/sh\n")
        (tmp / "build.sh").chmod(0o700)

    out = atomic.write_atomically(tmp_path / "out", tree)
    assert _mode(out) == 0o755 and _mode(out / "sub") == 0o755
    assert _mode(out / "model.safetensors") == 0o644 and _mode(out / "sub" / "x") == 0o644
    assert _mode(out / "build.sh") == 0o755
    os.umask(0o077)
    assert _mode(atomic.write_file(tmp_path / "mine", "x")) == 0o600


@pytest.mark.parametrize("step", ["write", "fsync", "chmod", "exchange", "fallback-rename"])
def test_directory_failing_between_steps_keeps_the_old_one(tmp_path, monkeypatch, step):
    out = tmp_path / "model"
    atomic.write_atomically(out, lambda t: (t / "config.json").write_text("old"))

    def write(tmp: Path):
        (tmp / "config.json").write_text("new")
        if step == "write":
            raise Boom("write")

    if step == "exchange":
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: (_ for _ in ()).throw(Boom()))
    elif step == "fallback-rename":  # no renameat2: the second of two renames fails
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
        real, calls = os.rename, []

        def rename(a, b):
            calls.append(a)
            if len(calls) == 2:
                raise OSError(5, "injected")
            real(a, b)

        monkeypatch.setattr(os, "rename", rename)
    elif step != "write":
        _fail_at(monkeypatch, step)
    with pytest.raises((Boom, OSError)):
        atomic.write_atomically(out, write, force=True, marker="config.json")
    monkeypatch.undo()
    assert (out / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_directory_is_replaced_whole(tmp_path):
    out = tmp_path / "model"
    atomic.write_atomically(out, lambda t: (t / "config.json").write_text("old"))
    (out / "stale.txt").write_text("from the old run")
    atomic.write_atomically(
        out, lambda t: (t / "config.json").write_text("new"), force=True, marker="config.json"
    )
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert (out / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_temporaries_of_dead_writers_are_swept_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    stale_file = tmp_path / f".a.json.{dead_pid}-deadbeef.tmp"
    stale_dir = tmp_path / f".out.{dead_pid}-deadbeef.tmp"
    live = tmp_path / f".a.json.{os.getppid()}-cafecafe.tmp"  # a running process
    stale_file.write_text("half")
    stale_dir.mkdir()
    (stale_dir / "x").write_text("half")
    live.write_text("in progress")
    atomic.write_file(tmp_path / "a.json", "{}")
    atomic.write_atomically(tmp_path / "out", lambda t: None)
    assert not stale_file.exists() and not stale_dir.exists() and live.exists()


def test_checksum_pairs_binary_and_metadata(tmp_path):
    engine, meta_path = tmp_path / "model.engine", tmp_path / "model.engine.json"
    meta = atomic.write_with_checksum(engine, b"engine-1", meta_path, {"precision": "fp16"})
    assert json.loads(meta_path.read_text()) == meta
    atomic.check_checksum(engine.read_bytes(), meta, engine)
    engine.write_bytes(b"engine-2")  # a new engine beside the old metadata
    with pytest.raises(PbdError, match="does not match its metadata"):
        atomic.check_checksum(engine.read_bytes(), meta, engine)


def test_checksum_crash_before_metadata_leaves_no_wrong_pair(tmp_path, monkeypatch):
    engine, meta_path = tmp_path / "model.engine", tmp_path / "model.engine.json"
    atomic.write_with_checksum(engine, b"old", meta_path, {})
    real = atomic.write_file

    def crash_on_metadata(path, data, executable=False):
        if Path(path) == meta_path:
            raise Boom("killed")
        return real(path, data, executable)

    monkeypatch.setattr(atomic, "write_file", crash_on_metadata)
    with pytest.raises(Boom):
        atomic.write_with_checksum(engine, b"new", meta_path, {})
    # New engine, no metadata: readers refuse it (engine_meta.read_metadata) instead of
    # trusting the old engine's metadata.
    assert engine.read_bytes() == b"new" and not meta_path.exists()


_HOLD = textwrap.dedent(
    """
    import sys, time
    from pbd_deploy.core.atomic import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_lock_refuses_a_second_writer_and_takes_over_a_killed_ones(tmp_path):
    out = tmp_path / "small"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PbdError, match=rf"being written by another run \(pid {holder.pid}"):
            with atomic.output_lock(out):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the lock file stays
        holder.wait()
    assert atomic.lock_path(out).exists()
    with atomic.output_lock(out) as path:
        assert path.read_text().startswith(f"pid {os.getpid()} ")
    assert not atomic.lock_path(out).exists()
