"""Mounts nested inside a cache mount, attached by the engine through descriptors.

A cache directory is shared with every step running at the same time. A RUN that
mounts `--mount=type=cache,target=/c` and also something at `/c/sub/x` makes the
runtime walk `/c/sub` — a directory another running step can swap for a symlink to
a host path between the runtime's check and its `mkdir`/`mount` (runc 1.1's
`MkdirAll` and the builtin runtime's path strings both fall for it; the tests race a
RENAME_EXCHANGE loop against them). So such mounts never reach the runtime: the
engine attaches them inside the cache's staging bind (`Staging.bind_fd`) before the
container starts —

- the mountpoint is found and made one O_NOFOLLOW descriptor per component,
  relative to the cache's own root (`..` and absolute symlinks stay in the cache);
- the mount is made on that descriptor: a bind is cloned with `open_tree`, made
  read-only with `mount_setattr` while still detached, and attached with
  `move_mount`; a tmpfs is mounted on `/proc/self/fd/N`, its flags given at creation;

and the runtime gets only the cache mount, bound recursively (`rbind`), nested
mounts included. They live in the engine's private mount namespace, under the
staging directory, and go away with it; other steps' binds of the same cache never
see them. Resolving inside the cache rather than the container root differs only for
a symlink in the cache pointing out of it, which now lands inside the cache.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat

from engine import linux
from engine.fs.safepath import clean
from engine.runtime.base import BindMount, TmpfsMount

RuntimeMount = BindMount | TmpfsMount

_SYS_OPEN_TREE = 428  # the same number on every architecture (unified syscall table)
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_AT_RECURSIVE = 0x8000
_AT_EMPTY_PATH = 0x1000
_AT_FDCWD = -100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_T_EMPTY_PATH = 0x40
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2


def _under(path: str, parent: str) -> bool:
    return parent == "/" or path.startswith(parent.rstrip("/") + "/")


def attach_under_caches(mounts: list[RuntimeMount], cache_targets: set[str], staging_dir: str) -> list[RuntimeMount]:
    """The mounts the runtime should make: those nested in a cache mount are attached here.

    `mounts` are sorted by target (parents first). A mount whose nearest enclosing
    mount is a cache mount (staged under `staging_dir`), or a mount already attached
    inside one, is attached into that cache's staging tree and left out of the result.
    """
    runtime: list[RuntimeMount] = []
    roots: dict[str, tuple[str, str]] = {}
    """target → (staging path of its cache, the cache's target), for caches and what is in them."""
    staging = staging_dir.rstrip("/") + "/"
    for mount in mounts:
        target = clean(mount.target)
        enclosing = max((t for t in roots if _under(target, t)), key=len, default=None)
        others = [clean(m.target) for m in runtime if _under(target, clean(m.target))]
        nearest_runtime = max(others, key=len, default=None)
        if enclosing is not None and (nearest_runtime is None or len(enclosing) >= len(nearest_runtime)):
            host_root, cache_target = roots[enclosing]
            attach(mount, host_root, posixpath.relpath(target, cache_target))
            roots[target] = (host_root, cache_target)
            continue
        runtime.append(mount)
        if target in cache_targets and isinstance(mount, BindMount) and mount.source.startswith(staging):
            roots[target] = (mount.source, target)
    return runtime


def attach(mount: RuntimeMount, host_root: str, rel: str) -> None:
    """Mount `mount` at `rel` inside the directory tree `host_root`, never leaving it."""
    from engine.solver.mounts import MountError

    directory = not isinstance(mount, BindMount) or os.path.isdir(mount.source)
    root_fd = os.open(host_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            target_fd = open_made_in_root(root_fd, rel, directory=directory)
        except OSError as exc:
            raise MountError(f"cannot create mountpoint {mount.target} in its cache mount: {exc.strerror}") from None
        try:
            if isinstance(mount, BindMount):
                _attach_bind(mount.source, target_fd, mount.readonly)
            else:
                data = f"size={mount.size}" if mount.size > 0 else None
                linux.mount("tmpfs", f"/proc/self/fd/{target_fd}", "tmpfs", linux.MS_NOSUID, data)
        except OSError as exc:
            raise MountError(f"cannot mount {mount.target} in its cache mount: {exc.strerror or exc}") from None
        finally:
            os.close(target_fd)
    finally:
        os.close(root_fd)


_MAX_LINKS = 40


def open_made_in_root(root_fd: int, path: str, *, directory: bool) -> int:
    """An O_PATH descriptor of `path` inside `root_fd` (as `/`), what is missing made there.

    One O_NOFOLLOW open per component: a symlink is read and followed inside the root
    (an absolute target restarts at it; a dangling one leads to its target being made),
    `..` returns to the directory we came from. Whatever a concurrent step renames or
    relinks, every directory opened or made is inside the root.
    """
    stack: list[int] = []
    pending = [part for part in clean(path).split("/") if part]
    pending.reverse()
    links = made = 0
    try:
        while pending:
            part = pending.pop()
            if part == "..":
                if stack:
                    os.close(stack.pop())
                continue
            current = stack[-1] if stack else root_fd
            try:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            except FileNotFoundError:
                made += 1
                if made > 256:
                    raise
                try:
                    if pending or directory:
                        os.mkdir(part, 0o755, dir_fd=current)
                    else:
                        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                        os.close(os.open(part, flags, 0o644, dir_fd=current))
                except FileExistsError:
                    pass
                pending.append(part)  # open what is there now
                continue
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                target = os.readlink(part, dir_fd=current)
                if target.startswith("/"):
                    while stack:
                        os.close(stack.pop())
                pending.extend(reversed([p for p in target.split("/") if p and p != "."]))
                continue
            if pending and not stat.S_ISDIR(mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            stack.append(fd)
        return stack.pop() if stack else os.dup(root_fd)
    finally:
        while stack:
            os.close(stack.pop())


def _syscall(number: int, *args: object) -> int:
    result = linux.libc().syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def _attach_bind(source: str, target_fd: int, readonly: bool) -> None:
    """Clone `source` (recursively), make it read-only while detached, attach it on `target_fd`."""
    tree = _syscall(
        _SYS_OPEN_TREE,
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(os.fsencode(source)),
        ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_RECURSIVE),
    )
    try:
        if readonly:
            attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY, 0, 0, 0)  # attr_set, attr_clr, propagation, userns_fd
            _syscall(
                _SYS_MOUNT_SETATTR,
                ctypes.c_int(tree),
                ctypes.c_char_p(b""),
                ctypes.c_uint(_AT_EMPTY_PATH | _AT_RECURSIVE),
                attr,
                ctypes.c_size_t(ctypes.sizeof(attr)),
            )
        _syscall(
            _SYS_MOVE_MOUNT,
            ctypes.c_int(tree),
            ctypes.c_char_p(b""),
            ctypes.c_int(target_fd),
            ctypes.c_char_p(b""),
            ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH),
        )
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise OSError(errno.ENOSYS, "this kernel lacks open_tree/move_mount (Linux 5.2) or mount_setattr (5.12)") from None
        raise
    finally:
        os.close(tree)
