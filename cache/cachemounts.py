"""Persistent directories for `RUN --mount=type=cache`, shared across builds and processes.

A cache mount is not a layer and not part of any cache key: it is a directory that
outlives the build, found again by its id. Like BuildKit's cache refs, one id can
have several *instances*: `sharing=shared` users all use instance 0 at once,
`locked` users wait for exclusive use of it, and a `private` user takes the first
instance nobody holds, creating a new one when all are busy. Exclusion is `flock`
on one lock file per instance, so it holds between threads of one build (separate
open file descriptions) and between shipyard processes sharing a state directory;
the kernel drops the locks of a process that dies, so nothing goes stale.

Layout under `<state>/cachemounts/`:

    <h>/info.json     the id and seed this directory belongs to (for people and prune)
    <h>/create.lock   held while an instance is being made
    <h>/<n>/          instance n: the directory mounted into the container
    <h>/<n>.lock      held (shared or exclusive) while instance n is mounted

`<h>` hashes the id together with how a new instance is seeded (empty, with an
owner and mode, or copied from another stage's files), because BuildKit keys its
cache refs on both: a different `from=` gets a different cache. An instance is
filled in a temporary directory and renamed into place, so a crash never leaves a
half-seeded cache behind under its final name.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from cache.flocks import wait_for_flock
from engine.errors import CacheError

SHARING_MODES = ("shared", "private", "locked")


@dataclass(frozen=True)
class CacheSeed:
    """How a new instance starts: empty, or a copy of another stage's files.

    `key` names the seed's identity (which stage result, which owner and mode); it is
    part of the directory's hash. `fill(dir)` copies the seed's files into an empty
    directory; None means start empty. `uid`/`gid`/`mode` (the mount's options) are
    applied to the instance's root when it is created; an empty instance without them
    is root-owned 0755, as BuildKit's is.
    """

    key: str = ""
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    fill: Callable[[str], None] | None = None


@dataclass(frozen=True)
class CacheLease:
    """An instance in use: `path` is the directory to mount; hold until the step ends."""

    id: str
    path: str
    instance: int
    exclusive: bool


class CacheMounts:
    """The cache-mount directories of one state root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def directory(self, cache_id: str, seed_key: str = "") -> Path:
        digest = hashlib.sha256(f"{cache_id}\0{seed_key}".encode()).hexdigest()[:32]
        return self.root / digest

    @contextmanager
    def acquire(
        self,
        cache_id: str,
        sharing: str = "shared",
        seed: CacheSeed | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[CacheLease]:
        """The instance to mount for one step, locked for as long as the context lasts."""
        if sharing not in SHARING_MODES:
            raise CacheError(f"unknown cache sharing mode {sharing!r}")
        seed = seed or CacheSeed()
        base = self.directory(cache_id, seed.key)
        base.mkdir(parents=True, exist_ok=True)
        _write_info(base, cache_id, seed.key)
        lock_fd = -1
        try:
            if sharing == "private":
                instance, lock_fd = self._private_instance(base, seed)
            else:
                instance = 0
                lock_fd = _open_lock(base / "0.lock")
                mode = fcntl.LOCK_SH if sharing == "shared" else fcntl.LOCK_EX
                wait_for_flock(lock_fd, mode, cancel, f"cache mount {cache_id!r}")
                self._ensure_instance(base, 0, seed)
            yield CacheLease(cache_id, str(base / str(instance)), instance, sharing != "shared")
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)  # closing the only descriptor releases the flock

    # ------------------------------------------------------------------ instances

    def _private_instance(self, base: Path, seed: CacheSeed) -> tuple[int, int]:
        """The first instance nobody holds (locked exclusively), or a new one."""
        with _creation_lock(base):
            numbers = sorted(_instances(base))
            for number in numbers + [max(numbers, default=-1) + 1]:
                fd = _open_lock(base / f"{number}.lock")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                except BaseException:
                    os.close(fd)
                    raise
                try:
                    self._create_if_missing(base, number, seed)
                except BaseException:
                    os.close(fd)
                    raise
                return number, fd
        raise CacheError("no cache instance could be locked")  # unreachable: the new number is free

    def _ensure_instance(self, base: Path, number: int, seed: CacheSeed) -> None:
        if (base / str(number)).is_dir():
            return
        with _creation_lock(base):
            self._create_if_missing(base, number, seed)

    def _create_if_missing(self, base: Path, number: int, seed: CacheSeed) -> None:
        """Seed instance `number` in a temporary directory, then rename it into place."""
        final = base / str(number)
        if final.is_dir():
            return
        for stale in base.glob("tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a crashed seeding; we hold the creation lock
        tmp = base / f"tmp-{secrets.token_hex(6)}"
        tmp.mkdir()
        try:
            if seed.fill is not None:
                seed.fill(str(tmp))
            else:
                os.chown(tmp, 0, 0)
                os.chmod(tmp, 0o755)
            if seed.uid is not None or seed.gid is not None:
                os.chown(tmp, -1 if seed.uid is None else seed.uid, -1 if seed.gid is None else seed.gid)
            if seed.mode is not None:
                os.chmod(tmp, seed.mode)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _instances(base: Path) -> list[int]:
    out = []
    for entry in os.listdir(base):
        if entry.isdigit() and os.path.isdir(base / entry):
            out.append(int(entry))
    return out


def _write_info(base: Path, cache_id: str, seed_key: str) -> None:
    info = base / "info.json"
    if info.exists():
        return
    tmp = base / f"info.{secrets.token_hex(4)}.tmp"
    tmp.write_text(json.dumps({"id": cache_id, "seed": seed_key}) + "\n")
    os.replace(tmp, info)


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextmanager
def _creation_lock(base: Path) -> Iterator[None]:
    fd = _open_lock(base / "create.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- seeding


def copy_tree(src: str, dst: str) -> None:
    """Copy the file or directory `src` to the new path `dst`, keeping owners, modes and times.

    Symlinks are copied as links (never followed), so a seed cannot pull in files from
    outside the stage it comes from. Devices and sockets are skipped. `dst` may be an
    existing empty directory when `src` is one.
    """
    st = os.lstat(src)
    if not stat.S_ISDIR(st.st_mode):
        _copy_entry(src, dst, st)
        return
    os.makedirs(dst, 0o700, exist_ok=True)
    dirs: list[tuple[str, os.stat_result]] = [(dst, st)]
    for current, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(current, src)
        target_dir = dst if rel == "." else os.path.join(dst, rel)
        for name in dirnames + filenames:
            path = os.path.join(current, name)
            entry = os.lstat(path)
            target = os.path.join(target_dir, name)
            if stat.S_ISDIR(entry.st_mode):
                os.mkdir(target, 0o700)
                dirs.append((target, entry))
            else:
                _copy_entry(path, target, entry)
    for path, entry in reversed(dirs):
        _set_meta(path, entry)


def _copy_entry(src: str, dst: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
    else:
        return
    _set_meta(dst, st)


def _set_meta(path: str, st: os.stat_result) -> None:
    os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
