"""Write a layer directory as a deterministic OCI layer tar.

A layer's digest is its identity (diff_id, chain id, image digest), so the bytes
must depend on the tree's content only: never on readdir order, inode numbers, the
host's user names, atimes, ctimes or sub-second mtimes. The rules (containerd's
`ChangeWriter` made stricter):

- entries depth-first, siblings sorted by their bytes in the archive, parents first;
  an opaque marker follows its directory's own entry;
- PAX format, numeric uid/gid, no uname/gname, no atime/ctime;
- mtime truncated to whole seconds and, with `source_date_epoch`, clamped to it
  (BuildKit's rewrite-timestamp);
- xattrs sorted: `security.capability` and everything outside `trusted.`,
  `security.`, `system.` — never overlayfs bookkeeping (`*.overlay.*`);
- hard links inside the layer as TypeLink to the first path in archive order;
- sockets skipped, devices and fifos kept;
- whiteouts in OCI form: `.wh.<name>` (regular, mode 0, uid/gid 0, mtime 0) and
  `.wh..wh..opq`, whether the directory holds overlay whiteouts (0/0 character
  devices, `trusted.overlay.opaque`/`user.overlay.opaque` = `y`) or OCI ones.

Data is streamed (never a whole file in memory); regular files are copied with
sendfile(2) when `out` is a plain file object.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from typing import BinaryIO, Iterator, Literal

from engine.fs.tarformat import (
    BLKTYPE,
    CHRTYPE,
    DIRTYPE,
    END_OF_ARCHIVE,
    FIFOTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    LayerError,
    encode_header,
    padding,
)

__all__ = ["LayerError", "write_layer_tar", "keep_xattr"]

WhiteoutFormat = Literal["overlay", "oci"]

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")

_CHUNK = 1 << 20
_FLUSH_AT = 1 << 18
_SMALL_FILE = 1 << 18

_NOFOLLOW_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def keep_xattr(name: str) -> bool:
    """Whether an xattr belongs in a layer (the same rule on write and on extract)."""
    if name == "security.capability":
        return True
    if name.startswith(("trusted.", "security.", "system.")):
        return False
    return not name.startswith("user.overlay.")


class _Entry:
    __slots__ = ("arcname", "path", "st", "whiteout", "xattrs", "opaque")

    def __init__(self, arcname: bytes, path: bytes, st: os.stat_result, whiteout: bool) -> None:
        self.arcname = arcname
        self.path = path
        self.st = st
        self.whiteout = whiteout
        self.xattrs: tuple[tuple[bytes, bytes], ...] = ()
        self.opaque = False


class _Output:
    """Batches small writes; streams large files, with sendfile(2) when `out` allows it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.buf = bytearray()
        self.fd: int | None = None
        # Only exact plain-file types: a GzipFile also has fileno(), of the *compressed* file.
        if type(out) in (io.BufferedWriter, io.BufferedRandom, io.FileIO):
            try:
                self.fd = out.fileno()
            except (OSError, ValueError):
                self.fd = None
        self.chunk = bytearray(_CHUNK)

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.out.write(self.buf)
            self.buf = bytearray()

    def copy_file(self, path: bytes, size: int, arcname: bytes) -> None:
        try:
            fd = os.open(path, _NOFOLLOW_READ)
        except OSError as exc:
            raise LayerError(f"cannot read file: {exc.strerror}", arcname) from None
        try:
            if size <= _SMALL_FILE:
                data = os.read(fd, size) if size else b""
                while len(data) < size:
                    more = os.read(fd, size - len(data))
                    if not more:
                        break
                    data += more
                if len(data) != size:
                    raise LayerError("file shrank while the layer was being written", arcname)
                self.buf += data
                self.buf += padding(size)
                if len(self.buf) >= _FLUSH_AT:
                    self.flush()
                return
            self.flush()
            if self.fd is not None and self._sendfile(fd, size, arcname):
                self.buf += padding(size)
                return
            view = memoryview(self.chunk)
            left = size
            while left:
                n = os.readv(fd, [view[: min(left, _CHUNK)]])
                if not n:
                    raise LayerError("file shrank while the layer was being written", arcname)
                self.out.write(view[:n])
                left -= n
            self.buf += padding(size)
        finally:
            os.close(fd)

    def _sendfile(self, fd: int, size: int, arcname: bytes) -> bool:
        """Copy in the kernel; False (nothing written) if this fd pair cannot sendfile."""
        assert self.fd is not None
        self.out.flush()
        offset = 0
        while offset < size:
            try:
                sent = os.sendfile(self.fd, fd, offset, min(size - offset, 1 << 30))
            except OSError as exc:
                if offset == 0 and exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    self.fd = None
                    return False
                raise
            if sent == 0:
                raise LayerError("file shrank while the layer was being written", arcname)
            offset += sent
        return True


class _Meta:
    """The header fields every entry type shares."""

    __slots__ = ("mode", "uid", "gid", "mtime", "xattrs")

    def __init__(self, mode: int, uid: int, gid: int, mtime: int, xattrs: tuple[tuple[bytes, bytes], ...]) -> None:
        self.mode, self.uid, self.gid, self.mtime, self.xattrs = mode, uid, gid, mtime, xattrs

    def header(
        self, name: bytes, typeflag: bytes, *, size: int = 0, linkname: bytes = b"", devmajor: int = 0, devminor: int = 0
    ) -> bytes:
        return encode_header(
            name,
            typeflag,
            mode=self.mode,
            uid=self.uid,
            gid=self.gid,
            size=size,
            mtime=self.mtime,
            linkname=linkname,
            devmajor=devmajor,
            devminor=devminor,
            xattrs=self.xattrs,
        )


def _read_xattrs(entry: _Entry, whiteouts: WhiteoutFormat) -> None:
    if stat.S_ISLNK(entry.st.st_mode):
        return  # only trusted.*/security.* can sit on a symlink, and neither is kept
    try:
        names = os.listxattr(entry.path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise LayerError(f"cannot list xattrs: {exc.strerror}", entry.arcname) from None
    if not names:
        return
    kept = []
    for name in names:
        if whiteouts == "overlay" and ".overlay." in name:
            if name in OVERLAY_OPAQUE_XATTRS and stat.S_ISDIR(entry.st.st_mode):
                if _getxattr(entry, name) == b"y":
                    entry.opaque = True
            elif name.endswith((".overlay.redirect", ".overlay.metacopy")):
                raise LayerError(
                    f"overlayfs {name.rsplit('.', 1)[-1]} entries cannot be exported "
                    "(mount overlay with redirect_dir=off,metacopy=off)",
                    entry.arcname,
                )
            continue
        if keep_xattr(name):
            value = _getxattr(entry, name)
            if value is not None:
                kept.append((name.encode(), value))
    kept.sort()
    entry.xattrs = tuple(kept)


def _getxattr(entry: _Entry, name: str) -> bytes | None:
    try:
        return os.getxattr(entry.path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise LayerError(f"cannot read xattr {name}: {exc.strerror}", entry.arcname) from None


def _children(dir_path: bytes, prefix: bytes, whiteouts: WhiteoutFormat) -> tuple[bool, list[_Entry]]:
    """The sorted entries of one directory, and whether it holds an OCI opaque marker."""
    try:
        names = os.listdir(dir_path)
    except OSError as exc:
        raise LayerError(f"cannot list directory: {exc.strerror}", prefix or b"/") from None
    opaque = False
    entries = []
    for name in names:
        path = dir_path + b"/" + name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise LayerError("entry vanished while the layer was being written", prefix + name) from None
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            continue
        if whiteouts == "overlay":
            if stat.S_ISCHR(mode) and st.st_rdev == 0:
                entries.append(_Entry(prefix + WHITEOUT_PREFIX + name, path, st, True))
                continue
            if name.startswith(WHITEOUT_PREFIX):
                raise LayerError(
                    "names starting with .wh. are reserved for whiteouts and cannot be stored in a layer",
                    prefix + name,
                )
        elif name.startswith(WHITEOUT_PREFIX):
            if name == OPAQUE_MARKER:
                opaque = True
            else:
                entries.append(_Entry(prefix + name, path, st, True))
            continue
        entries.append(_Entry(prefix + name, path, st, False))
    entries.sort(key=lambda e: e.arcname)
    return opaque, entries


def _walk(root: bytes, whiteouts: WhiteoutFormat) -> Iterator[_Entry | bytes]:
    """Entries depth-first; a bytes item is the arcname of an opaque marker to emit."""
    opaque, entries = _children(root, b"", whiteouts)
    if opaque:
        yield OPAQUE_MARKER
    stack: list[Iterator[_Entry]] = [iter(entries)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if not entry.whiteout:
            _read_xattrs(entry, whiteouts)
        yield entry
        if stat.S_ISDIR(entry.st.st_mode) and not entry.whiteout:
            marker, entries = _children(entry.path, entry.arcname + b"/", whiteouts)
            if marker or entry.opaque:
                yield entry.arcname + b"/" + OPAQUE_MARKER
            stack.append(iter(entries))


def write_layer_tar(
    layer_dir: str,
    out: BinaryIO,
    *,
    whiteouts: WhiteoutFormat = "overlay",
    source_date_epoch: int | None = None,
) -> None:
    """Write the tree under `layer_dir` to `out` as an uncompressed, deterministic layer tar.

    `whiteouts` says how deletions are encoded in the directory: "overlay" (an
    overlayfs upper dir) or "oci" (`.wh.` files). `out` is written sequentially and
    not closed.
    """
    if whiteouts not in ("overlay", "oci"):
        raise ValueError(f"unknown whiteout format {whiteouts!r}")
    root = os.fsencode(os.path.abspath(layer_dir))
    try:
        root_st = os.stat(root)
    except OSError as exc:
        raise LayerError(f"layer directory {layer_dir}: {exc.strerror}") from None
    if not stat.S_ISDIR(root_st.st_mode):
        raise LayerError(f"layer directory {layer_dir} is not a directory")
    output = _Output(out)
    links: dict[tuple[int, int], bytes] = {}
    for item in _walk(root, whiteouts):
        if isinstance(item, bytes):
            output.write(encode_header(item, REGTYPE))
            continue
        if item.whiteout:
            output.write(encode_header(item.arcname, REGTYPE))
            continue
        st = item.st
        mode = st.st_mode
        mtime = st.st_mtime_ns // 1_000_000_000
        if source_date_epoch is not None and mtime > source_date_epoch:
            mtime = source_date_epoch
        meta = _Meta(stat.S_IMODE(mode), st.st_uid, st.st_gid, mtime, item.xattrs)
        if stat.S_ISDIR(mode):
            output.write(meta.header(item.arcname + b"/", DIRTYPE))
            continue
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = links.get(key)
            if first is not None:
                output.write(meta.header(item.arcname, LNKTYPE, linkname=first))
                continue
            links[key] = item.arcname
        if stat.S_ISREG(mode):
            output.write(meta.header(item.arcname, REGTYPE, size=st.st_size))
            output.copy_file(item.path, st.st_size, item.arcname)
        elif stat.S_ISLNK(mode):
            output.write(meta.header(item.arcname, SYMTYPE, linkname=os.readlink(item.path)))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            typeflag = CHRTYPE if stat.S_ISCHR(mode) else BLKTYPE
            dev = st.st_rdev
            output.write(meta.header(item.arcname, typeflag, devmajor=os.major(dev), devminor=os.minor(dev)))
        elif stat.S_ISFIFO(mode):
            output.write(meta.header(item.arcname, FIFOTYPE))
    output.write(END_OF_ARCHIVE)
    output.flush()
