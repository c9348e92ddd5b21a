"""Extract a layer tar into a directory without ever touching anything outside it.

Layer tars come from registries, `docker save` files and `ADD` archives: hostile
input. The classic escapes are `../` names, absolute names, and the two-step symlink
attack (member `x -> /home/victim` then member `x/.ssh/authorized_keys`, or the link
already sitting in the destination from an earlier layer), plus hard links to host
files. So nothing here works with path strings on the host:

- the destination is opened once as a directory fd; every member's *parent* is
  resolved with openat2(RESOLVE_IN_ROOT) relative to it (symlinks are followed as
  if the destination were `/`, `..` clamps at it), falling back to a walk of
  O_NOFOLLOW opens with the same semantics where openat2 is unavailable;
- the last component is never followed: every create, unlink, chown, utime and
  xattr call is an *at() call on the parent fd with NOFOLLOW, or uses the fd of
  the file we just created;
- names that climb above the root with `..` are refused; absolute names are taken
  as relative to the destination (Docker's rule); hard-link targets resolve the
  same way and must already exist inside;
- `max_bytes` caps the total file data (a decompression bomb stops with a clear
  error); PAX/GNU metadata headers are capped by the tar reader.

Modes: "overlay" turns OCI whiteouts into overlayfs ones (0/0 character devices,
an `opaque` xattr) so the directory can serve as an overlay layer; "oci" keeps the
`.wh.` files as they are; "apply" treats the destination as a full root filesystem
and carries out the whiteouts (deleting only what earlier layers put there).
If extraction fails the destination is left part-written: extract into a fresh
directory and discard it on error.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import stat
from dataclasses import dataclass
from typing import BinaryIO, Callable, Literal

from engine.fs.layertar import OPAQUE_MARKER, WHITEOUT_PREFIX, keep_xattr
from engine.fs.tarformat import (
    AREGTYPE,
    BLKTYPE,
    CHRTYPE,
    CONTTYPE,
    DIRTYPE,
    FIFOTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    LayerError,
    TarHeader,
    TarReader,
)

__all__ = ["ExtractMode", "ExtractStats", "LayerError", "LayerLimitError", "extract_layer"]

ExtractMode = Literal["overlay", "oci", "apply"]

PATH_MAX = 4096
_CHUNK = 1 << 20

_SYS_OPENAT2 = 437  # the same number on every architecture (unified syscall table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_O_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40


class LayerLimitError(LayerError):
    """A layer past its size or entry limit: too big to be legitimate here, not malformed."""


@dataclass(frozen=True)
class ExtractStats:
    """What an extraction wrote (whiteouts counts deletions carried out or recorded)."""

    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    whiteouts: int = 0
    bytes: int = 0
    xattrs_skipped: int = 0
    owners_kept: int = 0
    """Entries whose owner does not exist in this rootless user namespace (they stay root's)."""
    devices_skipped: int = 0
    """Device nodes not created: a user namespace may not make them (rootless mode)."""


class _Root:
    """Resolves directories inside the destination; every fd it hands out stays inside."""

    def __init__(self, dest: str) -> None:
        self.fd = os.open(dest, _O_PATH_DIR)
        self.use_openat2 = True
        self._openat2 = _openat2_caller()
        self._cached_key: tuple[bytes, ...] | None = None
        self._cached_fd = -1

    def close(self) -> None:
        if self._cached_fd >= 0:
            os.close(self._cached_fd)
        os.close(self.fd)

    def invalidate(self) -> None:
        """Forget the cached parent: something was removed, so paths may resolve differently.

        The fd stays open (a caller may still hold it for the member at hand, whose
        parent is unaffected by removing the member's own name) until replaced.
        """
        self._cached_key = None

    def parent(self, comps: tuple[bytes, ...]) -> int:
        """A borrowed O_PATH fd of directory `comps`, created if missing; valid until the next call."""
        if self._cached_key is not None and comps == self._cached_key:
            return self._cached_fd
        fd = self.open_dir(comps, create=True)
        if self._cached_fd >= 0:
            os.close(self._cached_fd)
        self._cached_key, self._cached_fd = comps, fd
        return fd

    def open_dir(self, comps: tuple[bytes, ...], *, create: bool) -> int:
        """An owned O_PATH fd of directory `comps` resolved in the root (FileNotFoundError if absent)."""
        try:
            return self._resolve(comps)
        except FileNotFoundError:
            if not create or not comps:
                raise
        parent = self.open_dir(comps[:-1], create=True)
        try:
            try:
                os.mkdir(comps[-1], 0o755, dir_fd=parent)
            except FileExistsError:
                pass  # made meanwhile, or a dangling symlink: the open below decides
            try:
                return os.open(comps[-1], _O_PATH_DIR | os.O_NOFOLLOW, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotADirectoryError(
                        exc.errno, "a parent directory is a symlink to a missing target or not a directory"
                    ) from None
                raise
        finally:
            os.close(parent)

    def _resolve(self, comps: tuple[bytes, ...]) -> int:
        if self.use_openat2:
            path = b"/".join(comps) if comps else b"."
            for _ in range(8):
                try:
                    return self._openat2(self.fd, path, _O_PATH_DIR)
                except OSError as exc:
                    if exc.errno == errno.EAGAIN:  # a concurrent rename raced the `..` check
                        continue
                    if exc.errno in (errno.ENOSYS, errno.EPERM, errno.E2BIG):
                        self.use_openat2 = False  # old kernel or seccomp: walk by hand
                        break
                    raise
            else:
                raise OSError(errno.EAGAIN, "path resolution kept racing with renames")
        return resolve_dir_by_walk(self.fd, comps)


@functools.cache
def _openat2_caller() -> Callable[[int, bytes, int], int]:
    """openat2(dirfd, path, flags) with RESOLVE_IN_ROOT, via ctypes (Python 3.11 has no wrapper).

    Built on first use, not at import: ctypes costs start-up time every command pays.
    """
    import ctypes

    from engine.linux import libc

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]

    syscall = libc().syscall
    size = ctypes.c_size_t(ctypes.sizeof(OpenHow))
    number = ctypes.c_long(_SYS_OPENAT2)

    def openat2(dirfd: int, path: bytes, flags: int) -> int:
        how = OpenHow(flags, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        fd = syscall(number, ctypes.c_int(dirfd), ctypes.c_char_p(path), ctypes.byref(how), size)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(path))
        return int(fd)

    return openat2


def resolve_dir_by_walk(root_fd: int, comps: tuple[bytes, ...]) -> int:
    """RESOLVE_IN_ROOT done by hand: one O_NOFOLLOW open per component, symlinks re-rooted.

    Returns an owned O_PATH fd of the directory. `..` pops back to the directory we
    actually came from (never above the root); an absolute link target restarts at
    the root.
    """
    stack: list[int] = []
    pending = list(reversed(comps))
    links = 0
    try:
        while pending:
            part = pending.pop()
            if part in (b"", b"."):
                continue
            if part == b"..":
                if stack:
                    os.close(stack.pop())
                continue
            cur = stack[-1] if stack else root_fd
            fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                target = os.readlink(part, dir_fd=cur)
                if target.startswith(b"/"):
                    while stack:
                        os.close(stack.pop())
                pending.extend(reversed(target.split(b"/")))
                continue
            if not stat.S_ISDIR(mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            stack.append(fd)
        return stack.pop() if stack else os.dup(root_fd)
    finally:
        for fd in stack:
            os.close(fd)


def member_components(name: bytes, member: bytes | None = None) -> tuple[bytes, ...]:
    """The path components of an archive name inside the root.

    `a/./b//c` is cleaned, `/abs` is relative to the root (and `/..` stays at it);
    a relative name whose `..` climbs above the root is refused.
    """
    shown = name if member is None else member
    if b"\0" in name:
        raise LayerError("name contains a NUL byte", shown)
    if len(name) > PATH_MAX:
        raise LayerError(f"name is longer than {PATH_MAX} bytes", shown)
    absolute = name.startswith(b"/")
    comps: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if comps:
                comps.pop()
            elif not absolute:
                raise LayerError("path escapes the destination with ..", shown)
            continue
        comps.append(part)
    return tuple(comps)


_ID_MAX = (1 << 32) - 2  # (uid_t)-1 is chown's "leave unchanged", never an owner
_TIME_MAX_S = (1 << 63) - 1  # time_t
_DEV_MAJOR_MAX, _DEV_MINOR_MAX = (1 << 12) - 1, (1 << 20) - 1  # what mknod's 32-bit dev_t holds


def check_numbers(header: TarHeader) -> None:
    """Refuse owner ids, times and device numbers the system calls cannot take.

    Base-256 and PAX fields hold numbers of any size and sign; passed on, they would
    fail as OverflowError (or a silent "owner unchanged" for -1) instead of a LayerError.
    """
    if not (0 <= header.uid <= _ID_MAX and 0 <= header.gid <= _ID_MAX):
        raise LayerError(f"owner {header.uid}:{header.gid} is out of range", header.name)
    if abs(header.mtime_ns // 1_000_000_000) > _TIME_MAX_S:
        raise LayerError("modification time is out of range", header.name)
    if header.typeflag in (CHRTYPE, BLKTYPE) and not (
        0 <= header.devmajor <= _DEV_MAJOR_MAX and 0 <= header.devminor <= _DEV_MINOR_MAX
    ):
        raise LayerError(f"device number {header.devmajor}:{header.devminor} is out of range", header.name)


class _Extractor:
    def __init__(self, dest: str, mode: ExtractMode, max_bytes: int | None, max_entries: int | None = None) -> None:
        self.root = _Root(dest)
        self.mode = mode
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.is_root = os.geteuid() == 0
        # Root of a user namespace (rootless mode) may chown only to the ids its map
        # holds, may not make device nodes, and overlayfs there reads `user.` xattrs.
        self.in_userns = False
        if self.is_root:
            from engine.rootless import in_user_namespace

            self.in_userns = in_user_namespace()
        self.opaque_xattr = "trusted.overlay.opaque" if self.is_root and not self.in_userns else "user.overlay.opaque"
        self.written: set[bytes] = set()
        self.dirs: dict[tuple[bytes, ...], tuple[int, int]] = {}
        self.counts = dict.fromkeys(
            ("entries", "files", "dirs", "symlinks", "hardlinks", "devices", "whiteouts", "bytes", "xattrs_skipped",
             "owners_kept", "devices_skipped"), 0
        )
        self.buf = bytearray(_CHUNK)

    # ----------------------------------------------------------------- helpers

    def _remove(self, pfd: int, name: bytes, keep_dir: bool) -> os.stat_result | None:
        """Remove `name` in `pfd` (never following it); keep it if it is a dir and keep_dir."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return st
            shutil.rmtree(name, dir_fd=pfd)  # fd-based: immune to symlink swaps
        else:
            os.unlink(name, dir_fd=pfd)
        self.root.invalidate()
        return None

    def _set_xattrs(self, target: int | bytes, header: TarHeader) -> None:
        for key, value in header.xattrs:
            name = os.fsdecode(key)
            if not keep_xattr(name):
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.E2BIG, errno.ERANGE):
                    raise
                self.counts["xattrs_skipped"] += 1

    def _chown(self, target: int | bytes, header: TarHeader, pfd: int = -1) -> None:
        """The header's owner (root only); in a user namespace an id outside its map
        (EINVAL) leaves the entry root's — the single-id rootless map has only 0."""
        try:
            if isinstance(target, int):
                os.fchown(target, header.uid, header.gid)
            else:
                os.chown(target, header.uid, header.gid, dir_fd=pfd, follow_symlinks=False)
        except OSError as exc:
            if not (self.in_userns and exc.errno == errno.EINVAL):
                raise
            self.counts["owners_kept"] += 1

    @staticmethod
    def _proc_path(pfd: int, name: bytes) -> bytes:
        """A path naming `name` inside the directory behind `pfd`, for calls without dir_fd.

        The kernel jumps straight to the directory's inode through the fd's magic link;
        the last component is then looked up without following it.
        """
        return b"/proc/self/fd/%d/%s" % (pfd, name)

    # ----------------------------------------------------------------- members

    def run(self, stream: BinaryIO) -> ExtractStats:
        reader = TarReader(stream)
        try:
            while (header := reader.next()) is not None:
                self.counts["entries"] += 1
                if self.max_entries is not None and self.counts["entries"] > self.max_entries:
                    raise LayerLimitError(f"the layer has more than {self.max_entries} entries (the limit)")
                try:
                    self._member(header, reader)
                except LayerError:
                    raise
                except OSError as exc:
                    raise LayerError(exc.strerror or str(exc), header.name) from None
            self._finish_dirs()
        finally:
            self.root.close()
        return ExtractStats(**self.counts)

    def _member(self, header: TarHeader, reader: TarReader) -> None:
        comps = member_components(header.name)
        if not comps:
            return  # the root itself ("./"): the destination's own metadata is not ours to change
        base = comps[-1]
        if self.mode != "oci" and base.startswith(WHITEOUT_PREFIX):
            if base == OPAQUE_MARKER:
                self._opaque(comps[:-1], header)
            elif not base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):  # .wh..wh.* = AUFS metadata
                target = base[len(WHITEOUT_PREFIX) :]
                if target in (b"", b".", b".."):
                    raise LayerError("invalid whiteout name", header.name)
                self._whiteout(comps[:-1], target)
            return
        check_numbers(header)
        kind = header.typeflag
        if kind in (REGTYPE, AREGTYPE, CONTTYPE):
            self._file(comps, header, reader)
        elif kind == DIRTYPE:
            self._dir(comps, header)
        elif kind == SYMTYPE:
            self._symlink(comps, header)
        elif kind == LNKTYPE:
            self._hardlink(comps, header)
        elif kind in (CHRTYPE, BLKTYPE, FIFOTYPE):
            self._special(comps, header)
        else:
            raise LayerError(f"unsupported tar entry type {kind!r}", header.name)
        self.written.add(b"/".join(comps))

    def _file(self, comps: tuple[bytes, ...], header: TarHeader, reader: TarReader) -> None:
        size = header.size
        if self.max_bytes is not None and self.counts["bytes"] + size > self.max_bytes:
            raise LayerLimitError(f"layer data exceeds the limit of {self.max_bytes} bytes", header.name)
        pfd = self.root.parent(comps[:-1])
        self._remove(pfd, comps[-1], keep_dir=False)
        fd = os.open(comps[-1], _O_CREATE_FILE, 0o600, dir_fd=pfd)
        try:
            view = memoryview(self.buf)
            left = size
            while left:
                n = reader.readinto(view[: min(left, _CHUNK)])
                left -= n
                chunk = view[:n]
                while chunk:
                    written = os.write(fd, chunk)
                    chunk = chunk[written:]
            if self.is_root:
                self._chown(fd, header)
            os.fchmod(fd, header.mode & 0o7777)  # after chown, which clears setuid/setgid
            self._set_xattrs(fd, header)
            os.utime(fd, ns=(header.mtime_ns, header.mtime_ns))
        finally:
            os.close(fd)
        self.counts["files"] += 1
        self.counts["bytes"] += size

    def _dir(self, comps: tuple[bytes, ...], header: TarHeader) -> None:
        pfd = self.root.parent(comps[:-1])
        if self._remove(pfd, comps[-1], keep_dir=True) is None:
            os.mkdir(comps[-1], 0o700, dir_fd=pfd)
        fd = os.open(comps[-1], _O_DIR_NOFOLLOW, dir_fd=pfd)
        try:
            if self.is_root:
                self._chown(fd, header)
            self._set_xattrs(fd, header)
        finally:
            os.close(fd)
        # Mode and mtime last: writing children changes the mtime, and a read-only
        # mode would stop a non-root extraction from creating them.
        self.dirs.pop(comps, None)
        self.dirs[comps] = (header.mode & 0o7777, header.mtime_ns)
        self.counts["dirs"] += 1

    def _symlink(self, comps: tuple[bytes, ...], header: TarHeader) -> None:
        if b"\0" in header.linkname:
            raise LayerError("symlink target contains a NUL byte", header.name)
        pfd = self.root.parent(comps[:-1])
        self._remove(pfd, comps[-1], keep_dir=False)
        os.symlink(header.linkname, comps[-1], dir_fd=pfd)  # the target is data, stored verbatim
        self._finish_by_name(pfd, comps[-1], header, chmod=False)
        self.counts["symlinks"] += 1

    def _hardlink(self, comps: tuple[bytes, ...], header: TarHeader) -> None:
        target = member_components(header.linkname, header.name)
        if not target:
            raise LayerError("hard link to the root directory", header.name)
        try:
            tfd = self.root.open_dir(target[:-1], create=False)
        except (FileNotFoundError, NotADirectoryError):
            raise LayerError(f"hard link target {header.linkname.decode(errors='replace')!r} not found", header.name) from None
        try:
            try:
                tst = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise LayerError(
                    f"hard link target {header.linkname.decode(errors='replace')!r} not found", header.name
                ) from None
            if stat.S_ISDIR(tst.st_mode):
                raise LayerError("hard link to a directory", header.name)
            pfd = self.root.parent(comps[:-1])
            try:
                existing = os.stat(comps[-1], dir_fd=pfd, follow_symlinks=False)
                if (existing.st_dev, existing.st_ino) == (tst.st_dev, tst.st_ino):
                    return
            except FileNotFoundError:
                pass
            self._remove(pfd, comps[-1], keep_dir=False)
            pfd = self.root.parent(comps[:-1])
            os.link(target[-1], comps[-1], src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)
        self.counts["hardlinks"] += 1

    def _special(self, comps: tuple[bytes, ...], header: TarHeader) -> None:
        kind = header.typeflag
        if kind == FIFOTYPE:
            fmt = stat.S_IFIFO
        else:
            what = "character device" if kind == CHRTYPE else "block device"
            if not self.is_root:
                raise LayerError(f"{what} nodes can only be created by root", header.name)
            if self.mode == "overlay" and kind == CHRTYPE and header.devmajor == header.devminor == 0:
                raise LayerError("a 0/0 character device would read as an overlayfs whiteout", header.name)
            fmt = stat.S_IFCHR if kind == CHRTYPE else stat.S_IFBLK
        pfd = self.root.parent(comps[:-1])
        self._remove(pfd, comps[-1], keep_dir=False)
        if fmt != stat.S_IFIFO and self.in_userns:
            self.counts["devices_skipped"] += 1  # the kernel refuses them there (rootless podman skips them too)
            return
        device = os.makedev(header.devmajor, header.devminor) if fmt != stat.S_IFIFO else 0
        os.mknod(comps[-1], fmt | 0o600, device, dir_fd=pfd)
        self._finish_by_name(pfd, comps[-1], header, chmod=True)
        self.counts["devices"] += 1

    def _finish_by_name(self, pfd: int, name: bytes, header: TarHeader, *, chmod: bool) -> None:
        """Ownership, mode, xattrs and mtime of an entry that must not be opened (link, fifo, device)."""
        if self.is_root:
            self._chown(name, header, pfd)
        if chmod:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                os.chmod(b"/proc/self/fd/%d" % fd, header.mode & 0o7777)  # the inode behind fd, not a path
            finally:
                os.close(fd)
        self._set_xattrs(self._proc_path(pfd, name), header)
        os.utime(name, ns=(header.mtime_ns, header.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    # ----------------------------------------------------------------- whiteouts

    def _whiteout(self, dir_comps: tuple[bytes, ...], name: bytes) -> None:
        key = b"/".join(dir_comps + (name,))
        if key in self.written:
            return  # a whiteout hides only what earlier layers hold (image-spec)
        self.counts["whiteouts"] += 1
        if self.mode == "overlay":
            pfd = self.root.parent(dir_comps)
            self._remove(pfd, name, keep_dir=False)
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
            return
        try:
            pfd = self.root.parent(dir_comps) if self._exists(dir_comps) else -1
        except (FileNotFoundError, NotADirectoryError):
            pfd = -1
        if pfd >= 0:
            self._remove(pfd, name, keep_dir=False)

    def _exists(self, comps: tuple[bytes, ...]) -> bool:
        try:
            fd = self.root.open_dir(comps, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return False
        os.close(fd)
        return True

    def _opaque(self, dir_comps: tuple[bytes, ...], header: TarHeader) -> None:
        self.counts["whiteouts"] += 1
        if self.mode == "overlay":
            fd = self._open_real_dir(dir_comps, create=True)
            try:
                os.setxattr(fd, self.opaque_xattr, b"y")
            finally:
                os.close(fd)
            return
        if not self._exists(dir_comps):
            return
        fd = self._open_real_dir(dir_comps, create=False)
        try:
            prefix = b"/".join(dir_comps) + b"/" if dir_comps else b""
            removed = False
            for child in map(os.fsencode, os.listdir(fd)):
                if prefix + child in self.written:
                    continue
                if stat.S_ISDIR(os.stat(child, dir_fd=fd, follow_symlinks=False).st_mode):
                    shutil.rmtree(child, dir_fd=fd)
                else:
                    os.unlink(child, dir_fd=fd)
                removed = True
            if removed:
                self.root.invalidate()
        finally:
            os.close(fd)

    def _open_real_dir(self, comps: tuple[bytes, ...], *, create: bool) -> int:
        """An O_RDONLY fd (listable, xattr-able) of directory `comps` inside the root."""
        if not comps:
            return os.open(b".", _O_DIR_NOFOLLOW, dir_fd=self.root.fd)
        if create:
            pfd = self.root.parent(comps[:-1])
            try:
                os.mkdir(comps[-1], 0o755, dir_fd=pfd)
            except FileExistsError:
                pass
            return os.open(comps[-1], _O_DIR_NOFOLLOW, dir_fd=pfd)
        owned = self.root.open_dir(comps[:-1], create=False)
        try:
            return os.open(comps[-1], _O_DIR_NOFOLLOW, dir_fd=owned)
        finally:
            os.close(owned)

    # ----------------------------------------------------------------- the end

    def _finish_dirs(self) -> None:
        for comps, (mode, mtime_ns) in reversed(self.dirs.items()):
            try:
                pfd = self.root.open_dir(comps[:-1], create=False)
            except OSError:
                continue  # a later member replaced a parent (now missing, a file, a link loop)
            try:
                fd = os.open(comps[-1], _O_DIR_NOFOLLOW, dir_fd=pfd)
            except OSError:
                continue  # replaced by a later member or deleted by a whiteout
            finally:
                os.close(pfd)
            try:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            except OSError as exc:
                raise LayerError(f"cannot set directory metadata: {exc.strerror}", b"/".join(comps)) from None
            finally:
                os.close(fd)


def extract_layer(
    stream: BinaryIO,
    dest: str,
    *,
    mode: ExtractMode = "overlay",
    max_bytes: int | None = None,
    max_entries: int | None = None,
) -> ExtractStats:
    """Extract the uncompressed layer tar read from `stream` into the directory `dest`.

    Nothing outside `dest` is created, changed or read. Raises LayerError (naming the
    member) for hostile or unsupported members, and LayerLimitError when the file data
    exceeds `max_bytes` or the archive holds more than `max_entries` entries.
    """
    if mode not in ("overlay", "oci", "apply"):
        raise ValueError(f"unknown extract mode {mode!r}")
    try:
        extractor = _Extractor(dest, mode, max_bytes, max_entries)
    except OSError as exc:
        raise LayerError(f"cannot open extraction destination {dest}: {exc.strerror}") from None
    return extractor.run(stream)
