"""Leases: what each live process uses from a state directory, so that GC never takes it away.

Several shipyard processes share one state directory, and `prune` (or the automatic
GC after a build) may run while a build is half way through. The build must never
lose a snapshot it looked up, a layer directory it is filling or a blob it just
committed. Two files under `<state>/leases/` make that so:

- `gc.lock`, a reader/writer flock. A process holds it *shared* for the short moment
  in which it gets hold of something — looks cache keys up and notes their
  snapshots, commits a blob and notes its digest, names a new layer directory before
  making it — and garbage collection holds it *exclusive* while it decides what to
  delete and deletes it. Either the process's note is there when GC looks, or GC is
  done and the process sees the thing gone (a cache miss): never a thing deleted in
  use, never a lookup that hands out something about to vanish.
- `<pid>-<random>.lease`, one per process, made on its first note and flocked
  exclusive for the process's life. The kernel drops the flock when the process dies,
  however it dies (`kill -9` included), so a lease file whose lock can be taken is
  dead and GC sweeps it. One note per line: `s <snapshot id>`, `l <layer dir>`,
  `b <digest>`, `t <temp or mount name>`.

Lock order: `gc.lock` is taken before any SQLite transaction and never inside one —
GC writes to the index while it holds `gc.lock`, so the other order could deadlock.

`step_lock` is the third lock here: one flock file per cache key, held while a step
runs, so that two builds reaching the same step at once run it once (the second
waits, then finds the first's record).

A process keeps one `Leases` per state directory (`Leases.of`): flock belongs to an
open file description, so the index, the content store and the snapshotter of one
process must share one descriptor, or the process would wait on its own lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from cache.flocks import is_locked, wait_for_flock
from engine.errors import CacheError

LEASES_DIR = "leases"
GC_LOCK = "gc.lock"
LEASE_SUFFIX = ".lease"
STEP_LOCKS_DIR = os.path.join("locks", "steps")
_POLL_START = 0.002
_POLL_MAX = 0.1


class LeaseSet(NamedTuple):
    """Everything the live processes (optionally this one too) hold, read under the GC lock."""

    snapshots: frozenset[int]
    layers: frozenset[str]
    blobs: frozenset[str]
    temps: frozenset[str]
    holders: int
    """How many live processes other than this one have a lease file."""


class Leases:
    """This process's notes on one state directory, and the GC lock around them."""

    _registry: dict[str, "Leases"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / LEASES_DIR
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        self._owner = 0
        self._gc_fd = -1
        self._depth = 0
        self._exclusive = False
        self._lease_fd = -1
        self._lease_path: Path | None = None

    @classmethod
    def of(cls, root: Path | str) -> "Leases":
        """The one `Leases` of this process for the state directory `root`."""
        key = os.path.abspath(root)
        leases = cls._registry.get(key)
        if leases is None:
            with cls._registry_lock:
                leases = cls._registry.setdefault(key, cls(Path(key)))
        return leases

    # ------------------------------------------------------------------ the GC lock

    def _lock_fd(self) -> int:
        if self._gc_fd < 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._gc_fd = os.open(self.dir / GC_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._gc_fd

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Hold the GC lock shared (re-entrant, shared by this process's threads)."""
        me = threading.get_ident()
        with self._cond:
            while self._exclusive and self._owner != me:
                self._cond.wait()  # this process's own GC is running in another thread
            if self._depth == 0 and not self._exclusive:
                fcntl.flock(self._lock_fd(), fcntl.LOCK_SH)
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0 and not self._exclusive:
                    fcntl.flock(self._gc_fd, fcntl.LOCK_UN)
                self._cond.notify_all()

    @contextmanager
    def exclusive(self, timeout: float = 60.0) -> Iterator[None]:
        """Hold the GC lock exclusive: no other process gets hold of anything meanwhile.

        Waits (up to `timeout`) for the short shared holds of other processes and for
        this process's other threads to leave theirs.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._depth or self._exclusive:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise CacheError(f"the state directory {self.root} stayed busy for {timeout:.0f}s")
            fd = self._lock_fd()
            delay = _POLL_START
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                if time.monotonic() >= deadline:
                    raise CacheError(
                        f"the state directory {self.root} stayed busy for {timeout:.0f}s (another process holds its GC lock)"
                    )
                time.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
            self._exclusive = True
            self._owner = threading.get_ident()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._owner = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
                self._cond.notify_all()

    # ------------------------------------------------------------------ notes

    def hold(
        self,
        *,
        snapshots: Iterable[int | None] = (),
        layers: Iterable[str] = (),
        blobs: Iterable[str] = (),
        temps: Iterable[str] = (),
    ) -> None:
        """Note what this process uses, for as long as it lives. Call inside `guard()`."""
        lines = [f"s {s}\n" for s in snapshots if s is not None]
        lines += [f"l {name}\n" for name in layers]
        lines += [f"b {digest}\n" for digest in blobs]
        lines += [f"t {name}\n" for name in temps]
        if not lines:
            return
        with self._mutex:
            if self._lease_fd < 0:
                self._open_lease()
            os.write(self._lease_fd, "".join(lines).encode())

    def _open_lease(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{os.getpid()}-{secrets.token_hex(4)}{LEASE_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lease_fd, self._lease_path = fd, path

    def release(self) -> None:
        """Drop this process's notes (it is done with everything it held)."""
        with self._mutex:
            if self._lease_fd >= 0:
                path = self._lease_path
                try:
                    if path is not None:
                        os.unlink(path)
                except FileNotFoundError:
                    pass
                os.close(self._lease_fd)
                self._lease_fd, self._lease_path = -1, None

    @classmethod
    def release_all(cls) -> None:
        """Drop every lease of this process (at exit: the files would otherwise wait for a GC)."""
        for leases in list(cls._registry.values()):
            leases.release()

    @property
    def lease_path(self) -> Path | None:
        return self._lease_path

    # ------------------------------------------------------------------ what GC and checks read

    def live(self, include_self: bool = True) -> LeaseSet:
        """The notes of every live process; dead lease files are left for `sweep_dead`."""
        snapshots: set[int] = set()
        layers: set[str] = set()
        blobs: set[str] = set()
        temps: set[str] = set()
        holders = 0
        for path, alive in self._lease_files():
            if not alive:
                continue
            mine = path == self._lease_path
            if mine and not include_self:
                continue
            holders += 0 if mine else 1
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                kind, _, value = line.partition(" ")
                if not value:
                    continue
                if kind == "s" and value.isdigit():
                    snapshots.add(int(value))
                elif kind == "l":
                    layers.add(value)
                elif kind == "b":
                    blobs.add(value)
                elif kind == "t":
                    temps.add(value)
        return LeaseSet(frozenset(snapshots), frozenset(layers), frozenset(blobs), frozenset(temps), holders)

    def sweep_dead(self) -> int:
        """Remove the lease files of processes that died; how many were removed."""
        removed = 0
        for path, alive in self._lease_files():
            if not alive:
                try:
                    os.unlink(path)
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def _lease_files(self) -> Iterator[tuple[Path, bool]]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(LEASE_SUFFIX):
                continue
            path = self.dir / name
            if path == self._lease_path:
                yield path, True
                continue
            yield path, is_locked(path, fcntl.LOCK_SH)


def _forget_after_fork() -> None:
    """A forked child shares its parent's lock descriptors (an unlock there would unlock the
    parent too): every `Leases` of the child starts afresh and opens its own."""
    Leases._registry_lock = threading.Lock()
    for leases in Leases._registry.values():
        leases._mutex = threading.RLock()
        leases._cond = threading.Condition(leases._mutex)
        leases._owner = 0
        leases._gc_fd = -1
        leases._depth = 0
        leases._exclusive = False
        leases._lease_fd = -1
        leases._lease_path = None


os.register_at_fork(after_in_child=_forget_after_fork)


# --------------------------------------------------------------------------- one run of a step


def step_lock_path(root: Path | str, key: str) -> Path:
    name = hashlib.sha256(key.encode()).hexdigest()[:40]
    return Path(root) / STEP_LOCKS_DIR / f"{name}.lock"


@contextmanager
def step_lock(root: Path | str, key: str, cancel: threading.Event | None = None) -> Iterator[None]:
    """Hold the lock of one cache key across processes (and threads): record, then release.

    The holder unlinks the lock file before closing it, so lock files do not pile up;
    a waiter that then wins the old, unlinked file notices (its inode is no longer
    the path's) and tries again on the current one. A holder killed mid-step leaves
    its file behind, unlocked by the kernel: the next taker simply gets it.
    """
    path = step_lock_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            wait_for_flock(fd, fcntl.LOCK_EX, cancel, "another build running the same step")
            current = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if current.st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)


def sweep_step_locks(root: Path | str) -> int:
    """Remove step lock files nobody holds (left by killed builds); how many."""
    directory = Path(root) / STEP_LOCKS_DIR
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        path = directory / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)  # waiters that open it later see the inode change and retry
            removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
