"""Create the working directory and missing mountpoints inside a rootfs.

These are the only changes a runtime makes to the rootfs it is given. Every path
is resolved with `resolve_in_root`, so a hostile image whose `/etc` or `/work` is a
symlink to `/` on the host gets its stubs created inside its own root, never outside.
A target nested under an earlier mount is left for the runtime to create at mount
time (it lands in the mounted directory, as with runc), not in the rootfs beneath.
"""

from __future__ import annotations

import errno
import os
import stat

from engine.errors import ContextError
from engine.fs.safepath import clean, resolve_in_root
from engine.runtime.base import BindMount, ContainerSetupError, ProcessSpec

# Mountpoints every container needs in its rootfs: (path, is_directory).
BASE_MOUNTPOINTS: tuple[tuple[str, bool], ...] = (
    ("/proc", True),
    ("/dev", True),
    ("/sys", True),
    ("/etc/resolv.conf", False),
    ("/etc/hosts", False),
)


def _under(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent + "/")


def _create(rootfs: str, target: str, *, directory: bool, owner: tuple[int, int] | None) -> list[str]:
    """Create `target` (an in-root path) and its missing parents inside `rootfs`; returns what it made."""
    try:
        host = resolve_in_root(rootfs, target)
    except ContextError as exc:
        raise ContainerSetupError(str(exc)) from exc
    if os.path.lexists(host):
        return []
    missing: list[str] = []
    probe = host
    root = os.path.abspath(rootfs)
    while probe != root and not os.path.lexists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    missing.reverse()
    try:
        for index, path in enumerate(missing):
            last = index == len(missing) - 1
            if last and not directory:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                os.close(fd)
            else:
                os.mkdir(path, 0o755)
                if owner is not None:
                    os.chown(path, *owner, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return missing[:index]
        raise ContainerSetupError(f"cannot create {target} in the container: {os.strerror(exc.errno or 0)}") from exc
    return missing


def prepare_rootfs(rootfs: str, spec: ProcessSpec) -> list[str]:
    """Make the cwd (owned by the process user, as BuildKit does) and mountpoints.

    Returns the mount stubs it created (not the cwd), for `remove_stubs` after the run.
    """
    stubs: list[str] = []
    extra_targets = [clean(mount.target) for mount in spec.mounts]
    cwd = clean(spec.cwd)
    # Under /proc, /dev or /sys a stub would only be hidden by the kernel filesystem
    # mounted there (and land in the layer); the runtime reports such a cwd instead.
    covered = extra_targets + ["/proc", "/dev", "/sys"]
    if not any(_under(cwd, target) for target in covered):
        _create(rootfs, cwd, directory=True, owner=(spec.uid, spec.gid))
        host_cwd = resolve_in_root(rootfs, cwd)
        if not os.path.isdir(host_cwd):
            raise ContainerSetupError(f"working directory {cwd} is not a directory", 126)
    for target, directory in BASE_MOUNTPOINTS:
        if not any(_under(target, other) for other in extra_targets):
            stubs += _create(rootfs, target, directory=directory, owner=None)
    for index, mount in enumerate(spec.mounts):
        target = extra_targets[index]
        if any(_under(target, earlier) for earlier in extra_targets[:index]):
            continue
        directory = True
        if isinstance(mount, BindMount):
            try:
                directory = os.path.isdir(mount.source)
            except OSError:
                directory = True
            if not os.path.exists(mount.source):
                raise ContainerSetupError(f"bind mount source {mount.source} does not exist")
        stubs += _create(rootfs, target, directory=directory, owner=None)
    return stubs


def remove_stubs(stubs: list[str], rootfs: str) -> None:
    """Remove the mountpoints `prepare_rootfs` made, deepest first, if still empty.

    BuildKit's MountStubsCleaner does the same: an empty /etc/hosts or /proc the
    runtime needed must not end up in the step's layer. The container ran in between
    and may have replaced a parent directory with a symlink to somewhere on the host
    (the CVE-2024-23652 shape), so each removal walks down from the rootfs one
    component at a time with O_NOFOLLOW and acts on the last directory's descriptor:
    a symlink anywhere on the way ends the walk, and nothing outside the root is touched.
    """
    root = os.path.abspath(rootfs)
    for path in reversed(stubs):
        rel = os.path.relpath(path, root)
        if rel.startswith("..") or rel == ".":
            continue
        *parents, name = rel.split(os.sep)
        try:
            dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            for part in parents:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = next_fd
            st = os.lstat(name, dir_fd=dir_fd)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=dir_fd)
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
