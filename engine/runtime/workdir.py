"""Per-container directories under state_root/runtime/, and sweeping stale ones.

A container's directory (bundle, generated /etc files, runtime log) is created
under a temporary name, locked with flock, then renamed into place, and removed
before the lock is released. The lock lives exactly as long as the process that
runs the container, so a directory whose lock can be taken belongs to a process
that died (kill -9, power loss): `sweep_stale` then kills and deletes whatever
runc/crun container still runs under that id — runc containers outlive the
process that started them — and removes the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from engine.errors import RuntimeBackendError
from engine.runtime.base import RESERVED_IDS

LOCK = ".lock"
OCI_RUNTIMES = ("runc", "crun")


def _try_lock(directory: Path, *, create: bool = False) -> int | None:
    """An fd holding the directory's lock, or None when a live process holds it
    (or, without `create`, when there is no lock file to take)."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    try:
        fd = os.open(directory / LOCK, flags, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_stale(runtime_dir: Path, container_id: str) -> None:
    for name in OCI_RUNTIMES:
        state = runtime_dir / name
        if not (state / container_id).exists():
            continue
        binary = shutil.which(name)
        if binary is not None:
            subprocess.run(
                [binary, "--root", str(state), "delete", "--force", container_id],
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
    shutil.rmtree(runtime_dir / container_id, ignore_errors=True)


def sweep_stale(state_root: Path) -> list[str]:
    """Clean up after containers whose engine process died; the ids cleaned."""
    runtime_dir = Path(state_root) / "runtime"
    try:
        entries = list(os.scandir(runtime_dir))
    except FileNotFoundError:
        return []
    swept = []
    for entry in entries:
        if entry.name in RESERVED_IDS or not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith("."):
            continue  # a directory being created (or a crash mid-creation; harmless)
        if not os.path.lexists(os.path.join(entry.path, LOCK)):
            # Its owner is removing it right now (the lock goes first, after the container).
            continue
        fd = _try_lock(Path(entry.path))
        if fd is None:
            continue
        try:
            _remove_stale(runtime_dir, entry.name)
            swept.append(entry.name)
        finally:
            os.close(fd)
    return swept


@contextlib.contextmanager
def container_dir(runtime_dir: Path, container_id: str) -> Iterator[Path]:
    """The locked directory for one container run; gone when the block exits."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    final = runtime_dir / container_id
    fresh = Path(tempfile.mkdtemp(prefix=".new-", dir=runtime_dir))
    fd = _try_lock(fresh, create=True)
    if fd is None:
        shutil.rmtree(fresh, ignore_errors=True)
        raise RuntimeBackendError(f"cannot lock the state directory for container {container_id}")
    placed = fresh
    try:
        try:
            os.rename(fresh, final)
        except OSError:
            stale = _try_lock(final)
            if stale is None:
                raise RuntimeBackendError(f"container id {container_id} is already in use") from None
            try:
                _remove_stale(runtime_dir, container_id)
            finally:
                os.close(stale)
            os.rename(fresh, final)
        placed = final
        yield final
    finally:
        shutil.rmtree(placed, ignore_errors=True)
        os.close(fd)


def remove_if_stale(runtime_dir: Path, container_id: str) -> bool:
    """Clean one container's runtime state when no live process holds it; True if it did (or none was left)."""
    directory = Path(runtime_dir) / container_id
    if not directory.exists():
        for name in OCI_RUNTIMES:
            if (Path(runtime_dir) / name / container_id).exists():
                _remove_stale(Path(runtime_dir), container_id)
        return True
    fd = _try_lock(directory)
    if fd is None:
        return False
    try:
        _remove_stale(Path(runtime_dir), container_id)
    finally:
        os.close(fd)
    return True
