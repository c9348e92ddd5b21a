"""Deterministic gzip through isal; decompression by magic bytes with a byte cap."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import io
import lzma
import os
import random

import pytest

import engine.oci.compress as compress
from engine.oci.compress import CompressionError, compressor, decompress_stream


def _payload() -> bytes:
    rng = random.Random(7)
    text = b"".join(b"line %d of a fairly compressible layer\n" % i for i in range(60_000))
    return text + rng.randbytes(3 << 20) + text[:12345]


def _gzip(data: bytes, chunks: list[int], level: int | None = None) -> bytes:
    out = io.BytesIO()
    writer = compressor("gzip", out, level)
    pos = 0
    for size in chunks:
        writer.write(data[pos : pos + size])
        pos += size
    writer.write(data[pos:])
    writer.close()
    assert not out.closed, "closing the compressor must not close its destination"
    return out.getvalue()


def test_gzip_is_deterministic_whatever_the_write_pattern_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _payload()
    reference = _gzip(data, [len(data)])
    assert _gzip(data, [1, 511, 70_000, 2 << 20, 5]) == reference
    assert _gzip(data, [4096] * 500) == reference
    monkeypatch.setattr(compress, "GZIP_THREADS", 1)
    assert _gzip(data, [100_000] * 7) == reference, "the core count must not change the bytes"
    assert gzip.decompress(reference) == data
    assert len(reference) < len(data)


def test_gzip_header_has_no_name_and_no_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with open(tmp_path / "named-file.tar.gz", "wb") as out:  # a named file object must not leak its name
        writer = compressor("gzip", out)
        writer.write(b"hello")
        writer.close()
    blob = (tmp_path / "named-file.tar.gz").read_bytes()
    flags, mtime = blob[3], int.from_bytes(blob[4:8], "little")
    assert flags & 0x08 == 0 and mtime == 0
    assert b"named-file" not in blob
    assert gzip.decompress(blob) == b"hello"


def test_gzip_levels() -> None:
    data = _payload()
    sizes = [len(_gzip(data, [len(data)], level)) for level in (0, 1, 3)]
    assert all(gzip.decompress(_gzip(data, [len(data)], level)) == data for level in (0, 3))
    assert sizes[0] > sizes[2]
    with pytest.raises(CompressionError, match="level 9"):
        compressor("gzip", io.BytesIO(), 9)
    with pytest.raises(CompressionError, match="unsupported compression"):
        compressor("brotli", io.BytesIO())  # type: ignore[arg-type]


def test_uncompressed_passes_through_and_keeps_out_open() -> None:
    out = io.BytesIO()
    writer = compressor("uncompressed", out)
    writer.write(b"raw")
    writer.close()
    assert out.getvalue() == b"raw" and not out.closed


@pytest.mark.parametrize(
    "encode",
    [
        lambda d: d,
        lambda d: gzip.compress(d, mtime=0),
        lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:]),  # multi-member gzip
        bz2.compress,
        lzma.compress,
    ],
    ids=["uncompressed", "gzip", "gzip-multimember", "bzip2", "xz"],
)
def test_decompress_sniffs_the_format(encode) -> None:  # type: ignore[no-untyped-def]
    data = _payload()[-400_000:]
    stream = decompress_stream(io.BytesIO(encode(data)))
    try:
        assert stream.read() == data
    finally:
        stream.close()


def test_zstd_when_available() -> None:
    blob = b"\x28\xb5\x2f\xfd" + bytes(20)
    if importlib.util.find_spec("zstandard") is None:
        with pytest.raises(CompressionError, match="zstandard package is not installed"):
            decompress_stream(io.BytesIO(blob))
        return
    import zstandard

    data = _payload()
    stream = decompress_stream(io.BytesIO(zstandard.ZstdCompressor().compress(data)))
    assert stream.read() == data


def test_byte_cap_stops_a_decompression_bomb() -> None:
    bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 1 << 20
    stream = decompress_stream(io.BytesIO(bomb), max_bytes=8 << 20)
    with pytest.raises(CompressionError, match="exceeds the limit of 8388608 bytes"):
        while stream.read(1 << 20):
            pass
    stream.close()
    ok = decompress_stream(io.BytesIO(gzip.compress(b"small")), max_bytes=5)
    assert ok.read() == b"small"


def test_corrupt_gzip_is_a_clear_error() -> None:
    blob = bytearray(gzip.compress(os.urandom(100_000)))
    blob[len(blob) // 2] ^= 0xFF
    stream = decompress_stream(io.BytesIO(bytes(blob[: len(blob) - 3000])))
    with pytest.raises(CompressionError, match="corrupt compressed stream"):
        stream.read()
    stream.close()
