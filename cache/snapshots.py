"""Snapshotters: turn a chain of layer directories into a writable root and back.

A snapshot is a layer directory on top of a parent snapshot. To run a step, the
snapshotter `prepare`s a writable root over the parent chain; the step writes into it;
`commit` turns what changed into a new layer directory. Two implementations behind
one Protocol, so tests swap one real thing for another:

- `OverlaySnapshotter`: an overlayfs mount whose upper directory *is* the new layer
  (no copying; whiteouts are the kernel's char 0/0 devices and opaque xattrs).
- `CopySnapshotter`: for machines without overlayfs. Materializes the chain into a
  plain directory, records a stat manifest, and after the step writes the entries
  whose (inode, ctime) changed into the new layer, with OCI `.wh.` whiteouts.

Layer directories live in `layers/<random hex>/fs`; the index row is written only
after the directory is complete, so a crash leaves at most an orphan directory. The
name is noted in the process's lease (`cache.leases`) before the directory is made,
so garbage collection tells a directory being filled from an orphan; the same goes
for the mount points made under `mounts/`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from cache.index import CacheIndex
from engine import linux
from engine.errors import CacheError

OVERLAY_OPTIONS = "redirect_dir=off,metacopy=off,index=off,xino=off"
"""redirect_dir and metacopy off: every changed entry must be complete in the upper
dir, or the layer tar would miss content that still lives in a lower layer."""

ROOTLESS_OVERLAY_OPTIONS = "userxattr,redirect_dir=nofollow,metacopy=off,index=off,xino=off"
"""In a user namespace overlayfs cannot use `trusted.*` xattrs: `userxattr` makes it
keep opaque markers as `user.overlay.opaque` (which the layer tar writer reads and
the extractor writes there), and it refuses `redirect_dir=off` (which would still
follow redirects) — `nofollow` is the same promise for a layer: no redirects made."""


def overlay_options() -> str:
    """The mount options for this process: root of the host, or of a user namespace."""
    from engine.rootless import in_user_namespace

    return ROOTLESS_OVERLAY_OPTIONS if in_user_namespace() else OVERLAY_OPTIONS


@dataclass
class ActiveSnapshot:
    """A writable root being prepared on top of `parent`."""

    root: str
    layer_name: str
    parent: int | None
    mounted: bool = False
    manifest: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    direct: bool = False
    """`root` is the new layer directory itself, filled directly (see `prepare_layer`)."""


class Snapshotter(Protocol):
    kind: str
    layer_format: str

    def prepare(self, parent: int | None) -> ActiveSnapshot: ...

    def prepare_layer(self, parent: int | None) -> ActiveSnapshot: ...

    def commit(self, active: ActiveSnapshot) -> int: ...

    def abort(self, active: ActiveSnapshot) -> None: ...

    def view(self, snapshot: int | None) -> "contextlib.AbstractContextManager[str]": ...  # noqa: F821

    def layer_path(self, layer_dir: str) -> str: ...


class _Base:
    kind = ""
    layer_format = ""

    def __init__(self, index: CacheIndex, layers_dir: Path, mounts_dir: Path) -> None:
        self.index = index
        self.layers_dir = layers_dir
        self.mounts_dir = mounts_dir

    def layer_path(self, layer_dir: str) -> str:
        return str(self.layers_dir / layer_dir / "fs")

    def _chain_paths(self, snapshot: int | None) -> list[str]:
        """Layer directories of the chain, bottom first."""
        return [self.layer_path(row.layer.dir) for row in self.index.chain(snapshot)]

    def _new_layer(self) -> tuple[str, Path]:
        name = secrets.token_hex(8)
        path = self.layers_dir / name
        leases = self.index.leases
        with leases.guard():
            leases.hold(layers=[name])
        (path / "fs").mkdir(parents=True)
        return name, path

    def _new_mountpoint(self) -> Path:
        """An empty directory under `mounts/` for a view, noted in the lease first."""
        name = "view-" + secrets.token_hex(8)
        leases = self.index.leases
        with leases.guard():
            leases.hold(temps=[name])
        target = self.mounts_dir / name
        target.mkdir(parents=True)
        return target

    def prepare_layer(self, parent: int | None) -> ActiveSnapshot:
        """A fresh, empty layer directory on top of `parent`, written to directly (no mount).

        For steps whose result is known to be exactly "these new entries on top of the
        parent" (see `engine.solver.direct_copy`): no overlay, no materialized tree, and
        files in it can be hard links to identical files of older immutable layers.
        """
        name, path = self._new_layer()
        return ActiveSnapshot(root=str(path / "fs"), layer_name=name, parent=parent, direct=True)

    def _record(self, active: ActiveSnapshot) -> int:
        return self.index.add_snapshot(active.parent, active.layer_name, self.layer_format)

    def _discard_layer(self, name: str) -> None:
        shutil.rmtree(self.layers_dir / name, ignore_errors=True)


class OverlaySnapshotter(_Base):
    kind = "overlay"
    layer_format = "overlay"

    def prepare(self, parent: int | None) -> ActiveSnapshot:
        name, path = self._new_layer()
        lowers = self._chain_paths(parent)
        upper = str(path / "fs")
        if not lowers:
            return ActiveSnapshot(root=upper, layer_name=name, parent=parent)
        (path / "work").mkdir()
        target = self.mounts_dir / name
        target.mkdir(parents=True, exist_ok=True)
        try:
            mount_overlay(str(target), list(reversed(lowers)), upper=upper, work=str(path / "work"))
        except OSError as exc:
            self._discard_layer(name)
            target.rmdir()
            raise CacheError(f"cannot mount overlay for a new layer: {exc}") from exc
        return ActiveSnapshot(root=str(target), layer_name=name, parent=parent, mounted=True)

    def _release(self, active: ActiveSnapshot) -> None:
        if active.mounted:
            linux.umount(active.root, linux.MNT_DETACH)
            active.mounted = False
            os.rmdir(active.root)
        work = self.layers_dir / active.layer_name / "work"
        if work.exists():
            shutil.rmtree(work)

    def commit(self, active: ActiveSnapshot) -> int:
        self._release(active)
        return self._record(active)

    def abort(self, active: ActiveSnapshot) -> None:
        try:
            self._release(active)
        finally:
            self._discard_layer(active.layer_name)

    @contextmanager
    def view(self, snapshot: int | None) -> Iterator[str]:
        """A read-only path of the snapshot's whole filesystem (callers must not write)."""
        lowers = self._chain_paths(snapshot)
        if not lowers:
            empty = self._new_mountpoint()
            try:
                yield str(empty)
            finally:
                shutil.rmtree(empty, ignore_errors=True)
            return
        if len(lowers) == 1:
            yield lowers[0]
            return
        target = self._new_mountpoint()
        try:
            mount_overlay(str(target), list(reversed(lowers)))
            try:
                yield str(target)
            finally:
                linux.umount(str(target), linux.MNT_DETACH)
        finally:
            target.rmdir()


def mount_overlay(target: str, lowers_top_first: list[str], upper: str | None = None, work: str | None = None) -> None:
    """Mount overlayfs naming each lower dir as /proc/self/fd/N.

    The mount data is limited to one page; fd paths keep it ~18 bytes per layer
    whatever the state root's path length, so chains of 100+ layers still fit.
    """
    fds = [os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for p in lowers_top_first]
    try:
        data = "lowerdir=" + ":".join(f"/proc/self/fd/{fd}" for fd in fds)
        flags = 0
        if upper is not None and work is not None:
            data += f",upperdir={upper},workdir={work}"
        else:
            flags = linux.MS_RDONLY
        data += "," + overlay_options()
        if len(data) >= 4096:
            raise CacheError(f"layer chain too long for one overlay mount ({len(fds)} layers)")
        linux.mount("overlay", target, "overlay", flags, data)
    finally:
        for fd in fds:
            os.close(fd)


class CopySnapshotter(_Base):
    kind = "copy"
    layer_format = "oci"

    def prepare(self, parent: int | None) -> ActiveSnapshot:
        name, _ = self._new_layer()
        target = self.mounts_dir / name
        try:
            materialize(self._chain_paths(parent), str(target))
            manifest = stat_manifest(str(target))
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            self._discard_layer(name)
            raise
        return ActiveSnapshot(root=str(target), layer_name=name, parent=parent, manifest=manifest)

    def commit(self, active: ActiveSnapshot) -> int:
        if not active.direct:
            try:
                write_changes(active.root, active.manifest, self.layer_path(active.layer_name))
            finally:
                shutil.rmtree(active.root, ignore_errors=True)
        return self._record(active)

    def abort(self, active: ActiveSnapshot) -> None:
        if not active.direct:
            shutil.rmtree(active.root, ignore_errors=True)
        self._discard_layer(active.layer_name)

    @contextmanager
    def view(self, snapshot: int | None) -> Iterator[str]:
        lowers = self._chain_paths(snapshot)
        if len(lowers) == 1:
            yield lowers[0]
            return
        target = self._new_mountpoint()
        try:
            materialize(lowers, str(target))
            yield str(target)
        finally:
            shutil.rmtree(target, ignore_errors=True)


def overlay_supported(probe_dir: Path) -> bool:
    """Whether this process can mount overlayfs here (a real mount, then undone)."""
    base = Path(tempfile.mkdtemp(dir=probe_dir, prefix="ovl-probe-"))
    try:
        for sub in ("l1", "l2", "u", "w", "m"):
            (base / sub).mkdir()
        try:
            mount_overlay(str(base / "m"), [str(base / "l1"), str(base / "l2")], str(base / "u"), str(base / "w"))
        except (OSError, CacheError):
            return False
        linux.umount(str(base / "m"), linux.MNT_DETACH)
        return True
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- copy helpers

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


def _copy_entry(src: str, dst: str, st: os.stat_result) -> None:
    """Copy one non-directory entry with its metadata (the copy snapshotter's `cp -a`)."""
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        os.mknod(dst, st.st_mode, st.st_rdev)
    else:
        return
    _copy_meta(dst, st)


def _copy_meta(dst: str, st: os.stat_result) -> None:
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def apply_layer(layer: str, tree: str) -> None:
    """Apply one OCI-format layer directory onto a full tree (whiteouts delete)."""
    dirs_meta: list[tuple[str, os.stat_result]] = []
    for current, dirnames, filenames in os.walk(layer):
        rel = os.path.relpath(current, layer)
        target_dir = tree if rel == "." else os.path.join(tree, rel)
        names = dirnames + filenames
        if OPAQUE_MARKER in names:
            for child in os.listdir(target_dir):
                _remove(os.path.join(target_dir, child))
        for name in sorted(names):
            if name == OPAQUE_MARKER:
                continue
            src = os.path.join(current, name)
            dst = os.path.join(target_dir, name)
            if name.startswith(WHITEOUT_PREFIX):
                _remove(os.path.join(target_dir, name[len(WHITEOUT_PREFIX) :]))
                continue
            st = os.lstat(src)
            if stat.S_ISDIR(st.st_mode):
                existing = os.lstat(dst) if os.path.lexists(dst) else None
                if existing is not None and not stat.S_ISDIR(existing.st_mode):
                    _remove(dst)
                    existing = None
                if existing is None:
                    os.mkdir(dst)
                dirs_meta.append((dst, st))
            else:
                _remove(dst)
                _copy_entry(src, dst, st)
    for path, st in reversed(dirs_meta):
        _copy_meta(path, st)


def materialize(layers_bottom_first: list[str], target: str) -> None:
    os.makedirs(target, exist_ok=True)
    for layer in layers_bottom_first:
        apply_layer(layer, target)


def stat_manifest(tree: str) -> dict[str, tuple[int, int, int]]:
    """path → (inode, ctime_ns, mode) of every entry: enough to see any later change."""
    out: dict[str, tuple[int, int, int]] = {}
    st = os.lstat(tree)
    out[""] = (st.st_ino, st.st_ctime_ns, st.st_mode)
    for current, dirnames, filenames in os.walk(tree):
        rel = os.path.relpath(current, tree)
        prefix = "" if rel == "." else rel + "/"
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(current, name))
            out[prefix + name] = (st.st_ino, st.st_ctime_ns, st.st_mode)
    return out


def write_changes(tree: str, before: dict[str, tuple[int, int, int]], layer: str) -> None:
    """Write into `layer` every entry of `tree` that differs from `before`, plus whiteouts."""
    os.makedirs(layer, exist_ok=True)
    seen: set[str] = set()
    opaque: set[str] = set()
    dir_meta: list[tuple[str, os.stat_result]] = []

    def ensure_parent(rel: str) -> None:
        parent = os.path.dirname(rel)
        if not parent or os.path.isdir(os.path.join(layer, parent)):
            return
        ensure_parent(parent)
        st = os.lstat(os.path.join(tree, parent))
        os.mkdir(os.path.join(layer, parent))
        dir_meta.append((os.path.join(layer, parent), st))

    for current, dirnames, filenames in os.walk(tree):
        rel_dir = os.path.relpath(current, tree)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for name in sorted(dirnames + filenames):
            rel = prefix + name
            seen.add(rel)
            src = os.path.join(current, name)
            st = os.lstat(src)
            old = before.get(rel)
            if old is not None and old == (st.st_ino, st.st_ctime_ns, st.st_mode):
                continue
            ensure_parent(rel)
            dst = os.path.join(layer, rel)
            if stat.S_ISDIR(st.st_mode):
                if not os.path.isdir(dst):
                    os.mkdir(dst)
                if old is not None and stat.S_ISDIR(old[2]) and old[0] != st.st_ino:
                    # The directory was removed and made anew: hide everything below it.
                    open(os.path.join(dst, OPAQUE_MARKER), "wb").close()
                    opaque.add(rel)
                dir_meta.append((dst, st))
            else:
                _copy_entry(src, dst, st)
    for rel in before:
        if not rel or rel in seen:
            continue
        parent = os.path.dirname(rel)
        if parent and (parent not in seen or parent in opaque):
            continue  # an ancestor's whiteout or opaque marker already hides it
        ensure_parent(rel)
        open(os.path.join(layer, parent, WHITEOUT_PREFIX + os.path.basename(rel)), "wb").close()
    for path, st in reversed(dir_meta):
        _copy_meta(path, st)
