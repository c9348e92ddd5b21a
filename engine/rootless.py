"""Rootless mode: an unprivileged user's shipyard runs as root of its own user namespace.

Everything Shipyard does with the kernel — overlay mounts, namespaces, pivot_root,
chown to the image's owners — needs root. An unprivileged user gets it the way
rootless podman does: a user namespace in which their uid is 0. Inside it, uid 0
is the user, and (with `/etc/subuid`/`/etc/subgid` ranges and the setuid
`newuidmap`/`newgidmap` helpers from Debian's `uidmap`) uids 1..N are the user's
subordinate ids, so files an image gives to `www-data` keep an owner of their own.
Without ranges (or helpers) the map has one line: only uid/gid 0 exists inside,
and chowning to any other id fails (extraction then keeps root ownership).

How the namespace is entered — once per state root, shared by every command:
the first command forks a *pause process* that unshares a user namespace and
execs `sleep infinity` (with SIGHUP/SIGINT/SIGTERM ignored, in its own session,
stdio on /dev/null); the command writes the child's id maps from outside (a map
must be written from the parent namespace) and records its pid, start time,
map kind and namespace inode in `<state root>/rootless/pause.pid`. Every command — this first one included —
then `setns`es into the pause process's user namespace and unshares a private
mount namespace. Sharing one namespace is what lets a later `exec`, `stop` or
`rm` reach a container that an earlier `run` started (entering a sibling
namespace's mount or pid namespace would need capabilities we have only in our
own). If the pause process is gone (killed) while the namespace lives on —
containers' supervisors are in it — the next command finds it through one of them
(its inode is recorded beside the pid) and forks a new pause process into it;
only when nothing is left in it (e.g. after a reboot) is a new namespace made.

`setns(CLONE_NEWUSER)` and `unshare` of a user namespace both refuse a
multi-threaded process, so `enter` must run before any thread exists: the CLI
calls it from `state_root()`, the first thing every state-touching command does.
Processes started from inside (the container supervisor, runtimes, nsinit)
inherit the namespace and find `enter` a no-op.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.errors import ShipyardError

# ctypes, fcntl, pwd, shutil, signal and subprocess are imported where used: root
# asks only `host_root()` (via the state root's default), on every command.

PAUSE_DIR = "rootless"
PAUSE_FILE = "pause.pid"
LOCK_FILE = "lock"
SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
FULL_MAP = "0 0 4294967295"
MAX_MAP_LINES = 340  # the kernel's limit for uid_map / gid_map
_CLONE_NEWUSER = 0x10000000

MapKind = Literal["subid", "single"]


class RootlessError(ShipyardError):
    """The user namespace rootless mode needs could not be made or joined."""


@dataclass(frozen=True)
class IdRange:
    """One line of a uid_map/gid_map: `size` ids from `inside` map to host ids from `outside`."""

    inside: int
    outside: int
    size: int

    def line(self) -> str:
        return f"{self.inside} {self.outside} {self.size}"


@dataclass(frozen=True)
class IdMapping:
    """The uid and gid maps of a rootless namespace, and which kind they are."""

    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]
    kind: MapKind


# --- where are we? -------------------------------------------------------------------


@functools.cache
def in_user_namespace() -> bool:
    """Whether this process lives in a user namespace other than the host's.

    The initial namespace maps every id to itself in one line; any other map
    means someone (we, or a container engine above us) made a user namespace.
    """
    try:
        with open("/proc/self/uid_map") as handle:
            lines = handle.read().split("\n")
    except OSError:
        return False
    return " ".join(lines[0].split()) != FULL_MAP or any(line.strip() for line in lines[1:])


def host_root() -> bool:
    """Whether this process is root of the host (not merely root of a user namespace)."""
    return os.geteuid() == 0 and not in_user_namespace()


def rootless() -> bool:
    """Whether Shipyard runs in rootless mode (root inside a user namespace, not of the host)."""
    return os.geteuid() == 0 and in_user_namespace()


def read_map(path: str = "/proc/self/uid_map") -> tuple[IdRange, ...]:
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return ()
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3:
            ranges.append(IdRange(int(fields[0]), int(fields[1]), int(fields[2])))
    return tuple(ranges)


def mapped(uid: int, ranges: tuple[IdRange, ...]) -> bool:
    return any(r.inside <= uid < r.inside + r.size for r in ranges)


def single_id() -> bool:
    """Rootless with a one-id map: only uid 0 exists (no subordinate ids)."""
    if not rootless():
        return False
    uids = read_map()
    return sum(r.size for r in uids) <= 1


# --- the maps ---------------------------------------------------------------------------


def subordinate_ranges(path: str, user: str, uid: int) -> tuple[tuple[int, int], ...]:
    """(start, count) of every `/etc/subuid`-style line for `user` (by name or number)."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return ()
    found = []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            found.append((start, count))
    return tuple(found[: MAX_MAP_LINES - 1])


def _stack(own: int, ranges: tuple[tuple[int, int], ...]) -> tuple[IdRange, ...]:
    """0 → our own id, then the subordinate ranges one after another from 1."""
    out = [IdRange(0, own, 1)]
    inside = 1
    for start, count in ranges:
        out.append(IdRange(inside, start, count))
        inside += count
    return tuple(out)


def plan_mapping(
    uid: int,
    gid: int,
    user: str,
    *,
    subuid: str = SUBUID,
    subgid: str = SUBGID,
    helpers: bool | None = None,
) -> IdMapping:
    """The maps to give a new namespace: subordinate ranges when the user has both
    kinds and the setuid helpers exist, else the one-id map an unprivileged process
    may write itself."""
    if helpers is None:
        import shutil

        helpers = bool(shutil.which("newuidmap") and shutil.which("newgidmap"))
    uid_ranges = subordinate_ranges(subuid, user, uid)
    gid_ranges = subordinate_ranges(subgid, user, uid)
    if helpers and uid_ranges and gid_ranges:
        return IdMapping(_stack(uid, uid_ranges), _stack(gid, gid_ranges), "subid")
    return IdMapping((IdRange(0, uid, 1),), (IdRange(0, gid, 1),), "single")


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def write_maps(pid: int, mapping: IdMapping) -> None:
    """Give the (just unshared) user namespace of `pid` its maps, from outside it."""
    if mapping.kind == "subid":
        import subprocess

        for tool, ranges in (("newuidmap", mapping.uids), ("newgidmap", mapping.gids)):
            argv = [tool, str(pid)] + [str(n) for r in ranges for n in (r.inside, r.outside, r.size)]
            try:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            except OSError as exc:
                raise RootlessError(f"cannot run {tool}: {exc.strerror}") from exc
            if done.returncode != 0:
                detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                raise RootlessError(f"{tool} failed (check /etc/subuid and /etc/subgid): {detail}")
        return
    try:
        with open(f"/proc/{pid}/uid_map", "w") as handle:
            handle.write("\n".join(r.line() for r in mapping.uids) + "\n")
        with open(f"/proc/{pid}/setgroups", "w") as handle:
            handle.write("deny")  # an unprivileged gid_map needs it (CVE-2014-8989)
        with open(f"/proc/{pid}/gid_map", "w") as handle:
            handle.write("\n".join(r.line() for r in mapping.gids) + "\n")
    except OSError as exc:
        raise RootlessError(f"cannot write the user namespace's id map: {exc.strerror}") from exc


# --- the pause process ------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The start time of a live (not zombie) process `pid`; None when there is none."""
    from engine.runtime.procs import start_time

    return start_time(pid, alive=True)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _pause_command() -> list[str]:
    import shutil

    sleep = shutil.which("sleep") or "/bin/sleep"
    return [sleep, "infinity"]


def _spawn_pause(mapping: IdMapping | None, adopt: int = -1) -> tuple[int, int]:
    """Fork the namespace-holding pause process; (pid, start time) once its maps are written.

    With `adopt` (an fd of a namespace that lost its pause process) the child joins
    that namespace instead of making a new one (it already has its maps).
    """
    import ctypes
    import signal

    command = _pause_command()
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: single-threaded like its parent, so Python is safe here
        status = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            os.setsid()
            if adopt >= 0:
                entered = libc.setns(ctypes.c_int(adopt), ctypes.c_int(_CLONE_NEWUSER))
            else:
                entered = libc.unshare(ctypes.c_int(_CLONE_NEWUSER))
            if entered != 0:
                os.write(ready_w, b"E" + str(ctypes.get_errno()).encode())
                os._exit(1)
            os.write(ready_w, b"U")
            os.close(ready_w)
            if os.read(go_r, 1) != b"G":
                os._exit(1)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, 1 << 16)
            os.chdir("/")
            for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGPIPE, signal.SIGTSTP):
                signal.signal(signum, signal.SIG_IGN)  # ignored dispositions survive exec
            os.execv(command[0], command)
        except BaseException:
            pass
        os._exit(status)
    os.close(ready_w)
    os.close(go_r)
    try:
        answer = os.read(ready_r, 64)
        if not answer.startswith(b"U"):
            code = int(answer[1:] or b"0") if answer.startswith(b"E") else 0
            raise RootlessError(
                "cannot create a user namespace"
                + (f": {os.strerror(code)}" if code else "")
                + " (rootless mode needs unprivileged user namespaces: check user.max_user_namespaces)"
            )
        if mapping is not None:
            write_maps(pid, mapping)
        os.write(go_w, b"G")
    except BaseException:
        os.close(go_w)
        go_w = -1
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(ready_r)
        if go_w >= 0:
            os.close(go_w)
    start = _start_time(pid)
    if start is None:
        raise RootlessError("the rootless namespace's pause process died as it started")
    return pid, start


def _read_record(pid_file: Path) -> tuple[int, int, str, int]:
    """(pid, start time, map kind, namespace inode) as recorded; zeros when unreadable."""
    try:
        fields = pid_file.read_text().split()
        return int(fields[0]), int(fields[1]), fields[2], int(fields[3])
    except (OSError, ValueError, IndexError):
        return 0, 0, "", 0


def _write_record(pid_file: Path, pid: int, start: int, kind: str, ns: int) -> None:
    tmp = pid_file.with_name(f".{pid_file.name}.{os.getpid()}")
    tmp.write_text(f"{pid} {start} {kind} {ns}\n")
    os.replace(tmp, pid_file)


def _orphaned_namespace(ns: int) -> int | None:
    """An fd of user namespace `ns` through any process of ours still in it.

    A namespace outlives its pause process while containers (their supervisors,
    which run as the user) are in it; adopting it keeps them reachable.
    """
    if not ns:
        return None
    uid = os.getuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid or os.stat(f"/proc/{entry}/ns/user").st_ino != ns:
                continue
            fd = os.open(f"/proc/{entry}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        if os.fstat(fd).st_ino == ns:
            return fd
        os.close(fd)
    return None


def _usable_pause(pid_file: Path) -> int | None:
    """An open fd of the recorded pause process's user namespace, if it still is ours."""
    pid, start, _kind, _ns = _read_record(pid_file)
    if pid <= 1 or _start_time(pid) != start:
        return None
    import errno

    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
        if owner != os.getuid() or _start_time(pid) != start:
            raise OSError(errno.ESRCH, "not our pause process")
        if os.fstat(fd).st_ino == os.stat("/proc/self/ns/user").st_ino:
            raise OSError(errno.EINVAL, "not a separate namespace")
    except OSError:
        os.close(fd)
        return None
    return fd


def _pause_namespace(state_root: Path) -> int:
    """An fd of the user namespace held for this state root, creating it if needed."""
    import fcntl

    directory = Path(state_root) / PAUSE_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RootlessError(f"cannot use the state directory {state_root}: {exc.strerror}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one creator at a time; the loser joins the winner's
        pid_file = directory / PAUSE_FILE
        fd = _usable_pause(pid_file)
        if fd is not None:
            return fd
        _pid, _start, kind, ns = _read_record(pid_file)
        orphan = _orphaned_namespace(ns)
        if orphan is not None:
            try:
                pid, start = _spawn_pause(None, orphan)
            finally:
                os.close(orphan)
        else:
            uid, gid = os.getuid(), os.getgid()
            mapping = plan_mapping(uid, gid, _user_name(uid))
            pid, start = _spawn_pause(mapping)
            kind = mapping.kind
            try:
                ns = os.stat(f"/proc/{pid}/ns/user").st_ino
            except OSError:
                ns = 0
        _write_record(pid_file, pid, start, kind, ns)
        fd = _usable_pause(pid_file)
        if fd is None:
            raise RootlessError("the rootless namespace's pause process is not usable")
        return fd
    finally:
        os.close(lock)


def pause_pid(state_root: Path) -> int | None:
    """The pid of the state root's pause process, if one is recorded and alive."""
    pid, start, _kind, _ns = _read_record(Path(state_root) / PAUSE_DIR / PAUSE_FILE)
    return pid if pid > 1 and _start_time(pid) == start else None


_entered = False


def enter(state_root: Path) -> bool:
    """Become root of the state root's rootless user namespace (a no-op for real root).

    Returns True when this call moved the process into a namespace (it is then also
    in a private mount namespace). Must run before the process starts any thread.
    """
    global _entered
    if _entered or os.geteuid() == 0:
        return False  # host root, or already inside (a child of a rootless command)
    if _threads() > 1:
        raise RootlessError("internal error: rootless mode must be entered before any thread starts")
    import ctypes

    fd = _pause_namespace(state_root)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        if libc.setns(fd, ctypes.c_int(_CLONE_NEWUSER)) != 0:
            err = ctypes.get_errno()
            raise RootlessError(f"cannot join the rootless user namespace: {os.strerror(err)}")
    finally:
        os.close(fd)
    in_user_namespace.cache_clear()
    from engine import linux

    try:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    except OSError as exc:
        raise RootlessError(f"cannot make a mount namespace in the rootless user namespace: {exc.strerror}") from exc
    _entered = True
    return True
