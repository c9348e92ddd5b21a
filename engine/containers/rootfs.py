"""A container's root filesystem: the image's layers plus the container's own writable layer.

With the overlay snapshotter the writable layer is `upper/` (and overlay's
`work/`) in the container's directory, mounted with the image's layer
directories as lower dirs at `rootfs/` — by the supervisor, inside its own mount
namespace, so the mount lives exactly as long as the container's keeper and
never appears in the host's mount table. With the copy snapshotter `rootfs/` is
a full copy of the image made once, and is itself the writable layer.
Either way the writable layer stays until `rm`, so a stopped container can be
exported or started again later.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from engine import linux
from engine.containers.errors import ContainerError
from engine.containers.model import ContainerPlan
from engine.errors import CacheError


def _mount_overlay(target: str, lowers_top_first: list[str], upper: str | None, work: str | None) -> None:
    """The snapshotter's overlay mount (lower dirs as /proc/self/fd/N, userxattr when rootless)."""
    from cache.snapshots import mount_overlay

    try:
        mount_overlay(target, lowers_top_first, upper, work)
    except CacheError:  # the one refusal it makes: the mount data would exceed a page
        raise ContainerError(f"the image has too many layers for one overlay mount ({len(lowers_top_first)})") from None


def prepare(plan: ContainerPlan, directory: Path) -> str:
    """Mount (or make) the container's root filesystem; its path. Call in a private mount namespace."""
    root = directory / "rootfs"
    if plan.snapshotter == "copy":
        if not root.exists():
            from cache.snapshots import materialize

            partial = directory / f".rootfs-{secrets.token_hex(4)}"
            try:
                materialize(list(plan.lowers), str(partial))
                os.rename(partial, root)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        return str(root)
    upper, work = directory / "upper", directory / "work"
    for path in (upper, work, root):
        path.mkdir(exist_ok=True)
    if not plan.lowers:
        return str(upper)  # FROM scratch: the writable layer is the whole filesystem
    try:
        _mount_overlay(str(root), list(reversed(plan.lowers)), str(upper), str(work))
    except OSError as exc:
        raise ContainerError(f"cannot mount the container's root filesystem: {exc.strerror}") from exc
    return str(root)


def release(plan: ContainerPlan, directory: Path) -> None:
    if plan.snapshotter != "copy" and plan.lowers:
        with contextlib.suppress(OSError):
            linux.umount(str(directory / "rootfs"), linux.MNT_DETACH)


@contextlib.contextmanager
def merged_view(plan: ContainerPlan, directory: Path) -> Iterator[str]:
    """A read-only view of the container's whole filesystem (for export); needs a private mount namespace."""
    if plan.snapshotter == "copy":
        yield str(directory / "rootfs")
        return
    upper = directory / "upper"
    if not plan.lowers:
        yield str(upper)
        return
    target = directory / f"view-{secrets.token_hex(4)}"
    target.mkdir()
    try:
        try:
            _mount_overlay(str(target), [str(upper)] + list(reversed(plan.lowers)), None, None)
        except OSError as exc:
            raise ContainerError(f"cannot mount the container's filesystem: {exc.strerror}") from exc
        try:
            yield str(target)
        finally:
            linux.umount(str(target), linux.MNT_DETACH)
    finally:
        target.rmdir()
