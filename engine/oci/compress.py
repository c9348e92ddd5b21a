"""Layer compression and decompression streams.

Compression runs only when an export or a push needs a blob, so it must be fast and
deterministic: the same tar gives the same gzip bytes on every machine, whatever the
core count or the writer's chunk sizes. gzip goes through isal's threaded writer
(ISA-L deflate, several times faster than zlib) fed with fixed-size blocks; the
header carries no file name and mtime 0.

Decompression sniffs the magic bytes (gzip, zstd when `zstandard` is installed, and
bzip2/xz for `ADD` archives) and can cap the number of bytes it produces, so a
decompression bomb ends with a clear error instead of a full disk.
"""

from __future__ import annotations

import io
from typing import BinaryIO, Literal

from engine.errors import ShipyardError

Compression = Literal["gzip", "uncompressed"]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"

GZIP_BLOCK = 1 << 20
"""Bytes per independently compressed gzip block; part of the output format."""

DEFAULT_GZIP_LEVEL = 2
GZIP_THREADS = 2


class CompressionError(ShipyardError):
    """A blob that cannot be decompressed, or one that decompresses past its limit."""


class DecompressionLimitError(CompressionError):
    """A stream that decompresses past its `max_bytes` (a decompression bomb, or a huge layer)."""


class _FixedBlocks(io.RawIOBase):
    """Feeds `inner` in exact GZIP_BLOCK-sized writes so block boundaries never depend on callers."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self._buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed compressor")
        view = memoryview(data).cast("B")
        size = len(view)
        if not self._buf and size == GZIP_BLOCK:
            self._inner.write(view)
            return size
        self._buf += view
        if len(self._buf) >= GZIP_BLOCK:
            whole = len(self._buf) - len(self._buf) % GZIP_BLOCK
            block_view = memoryview(self._buf)
            for start in range(0, whole, GZIP_BLOCK):
                self._inner.write(block_view[start : start + GZIP_BLOCK])
            block_view.release()
            del self._buf[:whole]
        return size

    def flush(self) -> None:
        """A no-op on purpose: flushing a partial block would change the output bytes."""

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buf:
                self._inner.write(bytes(self._buf))
                self._buf = bytearray()
            self._inner.close()
        finally:
            super().close()


class _NoClose(io.RawIOBase):
    """Passes writes through; closing it leaves the destination open."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed compressor")
        self._inner.write(data)
        return len(memoryview(data).cast("B"))

    def flush(self) -> None:
        if not self.closed:
            self._inner.flush()


def compressor(kind: Compression, out: BinaryIO, level: int | None = None) -> BinaryIO:
    """A writable stream that compresses into `out`; closing it ends the stream, not `out`.

    gzip levels are isal's 0–3 (default 2, about zlib's 6 in ratio, many times faster).
    """
    if kind == "uncompressed":
        return _NoClose(out)  # type: ignore[return-value]
    if kind != "gzip":
        raise CompressionError(f"unsupported compression {kind!r} (use gzip or uncompressed)")
    if level is None:
        level = DEFAULT_GZIP_LEVEL
    if not 0 <= level <= 3:
        raise CompressionError(f"gzip level {level} is out of range (isal supports 0-3)")
    from isal import igzip_threaded

    inner = igzip_threaded.open(out, "wb", compresslevel=level, threads=GZIP_THREADS, block_size=GZIP_BLOCK)
    return _FixedBlocks(inner)  # type: ignore[return-value]


class _Prefixed(io.RawIOBase):
    """`prefix` followed by the rest of `inner` (what sniffing the magic bytes consumed)."""

    def __init__(self, prefix: bytes, inner: BinaryIO) -> None:
        self._prefix = prefix
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        if hasattr(self._inner, "readinto"):
            return self._inner.readinto(buf)  # type: ignore[no-any-return]
        data = self._inner.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class _Capped(io.RawIOBase):
    """Counts what `inner` produces; past `limit` bytes, raises instead of returning more."""

    def __init__(self, inner: BinaryIO, limit: int | None, closers: tuple[BinaryIO, ...]) -> None:
        self._inner = inner
        self._limit = limit
        self._count = 0
        self._closers = closers

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            n = self._inner.readinto(buf)  # type: ignore[attr-defined]
        except Exception as exc:  # OSError, EOFError, isal_zlib.error, lzma.LZMAError: no common base
            raise CompressionError(f"corrupt compressed stream: {exc}") from None
        self._count += n
        if self._limit is not None and self._count > self._limit:
            raise DecompressionLimitError(f"decompressed data exceeds the limit of {self._limit} bytes")
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            for stream in self._closers:
                stream.close()
        finally:
            super().close()


def sniff(head: bytes) -> str:
    """The compression named by a blob's first bytes: gzip, zstd, bzip2, xz or uncompressed."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    return "uncompressed"


XZ_MEMLIMIT = 256 << 20
"""Decoder memory an xz stream may ask for (`xz -9` needs 65 MiB; a crafted header asks for GiBs)."""


def _xz_reader(source: BinaryIO) -> BinaryIO:
    """An xz/lzma reader with a decoder memory limit (`lzma.LZMAFile` has no way to set one)."""
    import _compression
    import lzma

    raw = _compression.DecompressReader(
        source, lzma.LZMADecompressor, trailing_error=lzma.LZMAError, memlimit=XZ_MEMLIMIT
    )
    return io.BufferedReader(raw)  # type: ignore[arg-type,return-value]


def decompress_stream(stream: BinaryIO, *, max_bytes: int | None = None) -> BinaryIO:
    """A readable stream of `stream`'s decompressed bytes, whatever its compression.

    Closing the result stops any decompression thread; it does not close `stream`.
    With `max_bytes`, reading past that many decompressed bytes raises CompressionError.
    """
    head = b""
    while len(head) < 6:
        chunk = stream.read(6 - len(head))
        if not chunk:
            break
        head += chunk
    kind = sniff(head)
    source = _Prefixed(head, stream)
    decoded: BinaryIO
    closers: tuple[BinaryIO, ...] = ()
    if kind == "uncompressed":
        decoded = source  # type: ignore[assignment]
    elif kind == "gzip":
        from isal import igzip_threaded

        decoded = igzip_threaded.open(source, "rb", threads=1)
        closers = (decoded,)
    elif kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise CompressionError("zstd-compressed blob, but the zstandard package is not installed") from None
        decoded = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=False)
        closers = (decoded,)
    elif kind == "bzip2":
        import bz2

        decoded = bz2.BZ2File(source, "rb")  # type: ignore[assignment]
        closers = (decoded,)
    else:
        decoded = _xz_reader(source)
        closers = (decoded,)
    return io.BufferedReader(_Capped(decoded, max_bytes, closers), buffer_size=1 << 20)  # type: ignore[return-value]
