"""Reading an image archive (docker-archive, OCI layout tar) without extracting it.

A loaded archive is untrusted. Instead of unpacking it to disk — where a member named
`../../etc/x`, an absolute path or a symlink pointing out would be a tar-slip — the
archive is indexed: one pass over the tar headers (`engine.fs.tarformat`, not
`tarfile`) records where each regular file's bytes are, and members are read back
from that offset. Member names are only ever dictionary keys; nothing is created on
the filesystem from them, so nothing outside the archive can be read or written.

Names are checked anyway, so a hostile archive gets a clear error: an absolute name,
a `..` component, a NUL byte, a device node or a symlink/hard link whose target
leaves the archive is refused, naming the member. Symlinks and hard links inside the
archive are followed *within the archive's own namespace* (docker save writes a layer
shared by two images once and links the second `layer.tar` to it).

The archive must be seekable and uncompressed to be indexed in place; anything else
(stdin, a gzip-compressed archive) is first decompressed into an anonymous temporary
file in the state directory.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

from engine.errors import ShipyardError
from engine.fs import tarformat

MAX_MEMBERS = 1_000_000
MAX_METADATA_BYTES = 32 << 20
"""Largest JSON file (manifest.json, index.json, a config) read into memory."""
MAX_LINK_HOPS = 40
_CHUNK = 1 << 20


class ArchiveError(ShipyardError):
    """An archive that is unreadable, hostile, or not an image archive; names the archive."""


@dataclass(frozen=True)
class _File:
    offset: int
    size: int


class _Counting:
    """A read stream that knows how many bytes have been read (the current offset)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.offset += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.offset += n or 0
        return n or 0


class _MemberReader(io.RawIOBase):
    """The bytes of one member, read with pread so several readers can share the fd."""

    def __init__(self, fd: int, member: _File) -> None:
        self._fd = fd
        self._pos = member.offset
        self._end = member.offset + member.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._end - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._pos)
        if not data:
            raise ArchiveError("archive ended inside a member (was it changed while loading?)")
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _show(raw: bytes) -> str:
    """A member name fit for a one-line message (control characters escaped)."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _clean_name(raw: bytes, label: str) -> str:
    name = raw.decode("utf-8", "surrogateescape")
    shown = _show(raw)
    if "\0" in name:
        raise ArchiveError(f'{label}: archive member "{shown}" has a NUL byte in its name')
    if name.startswith("/"):
        raise ArchiveError(f'{label}: archive member "{shown}" has an absolute path')
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f'{label}: archive member "{shown}" has a ".." path component')
    return "/".join(parts)


class ArchiveIndex:
    """The regular files of a tar, by name, readable at their offsets."""

    def __init__(self, fd: int, label: str) -> None:
        self._fd = fd
        self.label = label
        self._files: dict[str, _File] = {}
        self._symlinks: dict[str, str] = {}
        self._hardlinks: dict[str, str] = {}
        self._dirs: set[str] = set()

    # ------------------------------------------------------------------ building

    @classmethod
    def from_file(cls, path: str | None, tmp_dir: str, label: str) -> ArchiveIndex:
        """Index the archive at `path` (None: stdin), decompressing to a temp file if needed."""
        from engine.oci.compress import CompressionError, DecompressionLimitError, decompress_stream, sniff

        if path is None:
            source: BinaryIO = os.fdopen(os.dup(0), "rb")
        else:
            try:
                source = open(path, "rb")
            except OSError as exc:
                raise ArchiveError(f"{label}: {exc.strerror}") from None
        with source:
            seekable = path is not None and stat.S_ISREG(os.fstat(source.fileno()).st_mode)
            head = source.read(8) if seekable else b""
            if seekable and sniff(head) == "uncompressed":
                fd = os.dup(source.fileno())
            else:
                if seekable:
                    source.seek(0)
                os.makedirs(tmp_dir, exist_ok=True)
                spool = tempfile.TemporaryFile(dir=tmp_dir, prefix="load-")
                from engine.limits import load_limits

                limits = load_limits()
                try:
                    stream = decompress_stream(source, max_bytes=limits.archive_bytes)
                    while chunk := stream.read(_CHUNK):
                        spool.write(chunk)
                    spool.flush()
                    fd = os.dup(spool.fileno())
                except DecompressionLimitError as exc:
                    raise ArchiveError(f"{label}: {exc}; {limits.hint()}") from None
                except CompressionError as exc:
                    raise ArchiveError(f"{label}: {exc}") from None
                except OSError as exc:
                    raise ArchiveError(f"{label}: cannot read the archive: {exc.strerror or exc}") from None
                finally:
                    spool.close()
        index = cls(fd, label)
        try:
            index._scan()
        except BaseException:
            index.close()
            raise
        return index

    def _scan(self) -> None:
        with os.fdopen(os.dup(self._fd), "rb", buffering=_CHUNK) as raw:
            raw.seek(0)
            counting = _Counting(raw)
            reader = tarformat.TarReader(counting)  # type: ignore[arg-type]
            count = 0
            while True:
                try:
                    header = reader.next()
                except tarformat.LayerError as exc:
                    where = f' (member "{exc.member}")' if exc.member and exc.member.isprintable() else ""
                    raise ArchiveError(f"{self.label}: not a readable tar archive: {exc.message}{where}") from None
                if header is None:
                    break
                count += 1
                if count > MAX_MEMBERS:
                    raise ArchiveError(f"{self.label}: more than {MAX_MEMBERS} members; not an image archive")
                self._add(header, counting.offset)

    def _add(self, header: tarformat.TarHeader, offset: int) -> None:
        name = _clean_name(header.name, self.label)
        for table in (self._files, self._symlinks, self._hardlinks):
            table.pop(name, None)  # a later member of the same name replaces it, as tar does
        kind = header.typeflag
        if kind in (tarformat.REGTYPE, tarformat.AREGTYPE, tarformat.CONTTYPE):
            self._files[name] = _File(offset, header.size)
        elif kind == tarformat.DIRTYPE:
            self._dirs.add(name)
        elif kind == tarformat.SYMTYPE:
            self._symlinks[name] = header.linkname.decode("utf-8", "surrogateescape")
        elif kind == tarformat.LNKTYPE:
            self._hardlinks[name] = _clean_name(header.linkname, self.label)
        else:
            raise ArchiveError(
                f'{self.label}: archive member "{_show(header.name)}" has tar type {kind.decode("latin-1")!r}; '
                "image archives hold only files, directories and links"
            )

    # ------------------------------------------------------------------ reading

    def _resolve(self, name: str) -> str | None:
        """The regular file `name` leads to, following links inside the archive (None: absent)."""
        pending = [p for p in name.split("/") if p not in ("", ".")]
        pending.reverse()
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if not resolved:
                    raise ArchiveError(f'{self.label}: "{name}" leads outside the archive')
                resolved.pop()
                continue
            resolved.append(part)
            current = "/".join(resolved)
            link = self._symlinks.get(current)
            hard = self._hardlinks.get(current) if link is None else None
            if link is None and hard is None:
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise ArchiveError(f'{self.label}: too many links resolving "{name}"')
            if hard is not None:
                resolved = []
                pending.extend(reversed(hard.split("/")))
                continue
            if link.startswith("/"):
                raise ArchiveError(f'{self.label}: archive member "{current}" is a symlink to "{link}", outside the archive')
            if not link:
                raise ArchiveError(f'{self.label}: archive member "{current}" is a symlink with an empty target')
            resolved.pop()
            pending.extend(reversed([p for p in link.split("/") if p not in ("", ".")]))
        path = "/".join(resolved)
        return path if path in self._files else None

    def has(self, name: str) -> bool:
        return self._resolve(name) is not None

    def size(self, name: str) -> int:
        return self._member(name).size

    def _member(self, name: str) -> _File:
        path = self._resolve(name)
        if path is None:
            raise ArchiveError(f'{self.label}: the archive has no file "{name}"')
        return self._files[path]

    def open(self, name: str) -> BinaryIO:
        return io.BufferedReader(_MemberReader(self._fd, self._member(name)), buffer_size=_CHUNK)  # type: ignore[return-value]

    def read(self, name: str, limit: int = MAX_METADATA_BYTES) -> bytes:
        member = self._member(name)
        if member.size > limit:
            raise ArchiveError(f'{self.label}: "{name}" is {member.size} bytes, more than the {limit} allowed for it')
        with self.open(name) as stream:
            return stream.read()

    def head(self, name: str, size: int) -> bytes:
        with self.open(name) as stream:
            return stream.read(size)

    def names(self) -> list[str]:
        return sorted(self._files)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ArchiveIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
