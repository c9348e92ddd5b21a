"""The tar header codec against Python's tarfile and GNU tar, in both directions."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time

import pytest

from engine.fs.tarformat import (
    DIRTYPE,
    END_OF_ARCHIVE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    LayerError,
    TarReader,
    encode_header,
    padding,
)


def _read_all(data: bytes) -> list[tuple[object, bytes]]:
    reader = TarReader(io.BytesIO(data))
    out = []
    while (header := reader.next()) is not None:
        buf = bytearray(header.size if header.has_data else 0)
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            got += reader.readinto(view[got:])
        out.append((header, bytes(buf)))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_what_tarfile_writes(fmt: int) -> None:
    buf = io.BytesIO()
    long_name = "deep/" + "d" * 120 + "/file.txt"
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, data, link in [
            ("dir", tarfile.DIRTYPE, b"", ""),
            ("dir/a.txt", tarfile.REGTYPE, b"hello", ""),
            (long_name if fmt != tarfile.USTAR_FORMAT else "short/file.txt", tarfile.REGTYPE, b"x" * 1000, ""),
            ("sym", tarfile.SYMTYPE, b"", "dir/a.txt"),
            ("hard", tarfile.LNKTYPE, b"", "dir/a.txt"),
        ]:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            info.mode = 0o4755
            info.uid, info.gid, info.mtime = 1000, 50, 1_700_000_000
            info.linkname = link
            tar.addfile(info, io.BytesIO(data) if data else None)
    entries = _read_all(buf.getvalue())
    names = [h.name.decode() for h, _ in entries]  # type: ignore[attr-defined]
    assert names[0] in ("dir", "dir/")
    assert entries[1][1] == b"hello"
    assert entries[2][1] == b"x" * 1000
    if fmt != tarfile.USTAR_FORMAT:
        assert names[2] == long_name
    header = entries[1][0]
    assert (header.mode, header.uid, header.gid, header.mtime_ns) == (0o4755, 1000, 50, 1_700_000_000 * 10**9)  # type: ignore[attr-defined]
    assert entries[3][0].typeflag == SYMTYPE and entries[3][0].linkname == b"dir/a.txt"  # type: ignore[attr-defined]
    assert entries[4][0].typeflag == LNKTYPE  # type: ignore[attr-defined]


def test_tarfile_and_gnu_tar_read_what_we_write(tmp_path) -> None:
    xattr_value = b"\x01\x00\x00\x02\xff\n="
    name = ("ü/" + "n" * 150).encode()
    data = b"payload" * 100
    archive = (
        encode_header(b"plain/", DIRTYPE, mode=0o755, mtime=5)
        + encode_header(name, REGTYPE, mode=0o644, uid=3_000_000, gid=7, size=len(data), mtime=-10, xattrs=((b"user.x", xattr_value),))
        + data
        + padding(len(data))
        + encode_header(b"link", SYMTYPE, linkname=b"/" + b"t" * 200)
        + END_OF_ARCHIVE
    )
    with tarfile.open(fileobj=io.BytesIO(archive), encoding="utf-8", errors="surrogateescape") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["plain", name.decode(), "link"]
        big = members[1]
        assert (big.uid, big.gid, big.mtime, big.size) == (3_000_000, 7, -10, len(data))
        assert big.pax_headers["SCHILY.xattr.user.x"].encode("utf-8", "surrogateescape") == xattr_value
        assert tar.extractfile(big).read() == data  # type: ignore[union-attr]
        assert members[2].linkname == "/" + "t" * 200
    path = tmp_path / "a.tar"
    path.write_bytes(archive)
    listing = subprocess.run(["tar", "-tf", str(path)], check=True, capture_output=True, text=True).stdout.split()
    assert listing == ["plain/", name.decode(), "link"]
    # and our reader agrees with itself
    entries = _read_all(archive)
    assert entries[1][0].xattrs == ((b"user.x", xattr_value),)  # type: ignore[attr-defined]
    assert entries[1][0].mtime_ns == -10 * 10**9  # type: ignore[attr-defined]


def test_gnu_base256_numbers() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("big-uid")
        info.uid = 8**8 + 5  # does not fit octal: GNU writes base-256
        info.mtime = -100
        tar.addfile(info)
    (header, _), = _read_all(buf.getvalue())
    assert header.uid == 8**8 + 5  # type: ignore[attr-defined]
    assert header.mtime_ns == -100 * 10**9  # type: ignore[attr-defined]


def test_corrupt_checksum_is_refused() -> None:
    block = bytearray(encode_header(b"file", REGTYPE, size=0))
    block[0:4] = b"evil"
    with pytest.raises(LayerError, match="checksum"):
        TarReader(io.BytesIO(bytes(block) + END_OF_ARCHIVE)).next()


def test_huge_pax_header_is_refused_without_reading_it() -> None:
    header = encode_header(b"PaxHeaders.0/x", b"x", size=10**11)
    start = time.monotonic()
    with pytest.raises(LayerError, match="extended header"):
        TarReader(io.BytesIO(header)).next()
    assert time.monotonic() - start < 1


def test_pax_parsing_is_linear_on_hostile_records() -> None:
    # CVE-2024-6232 shape: long digit runs that make tarfile's regexes backtrack.
    body = b"9" * 500_000
    header = encode_header(b"PaxHeaders.0/x", b"x", size=len(body)) + body + padding(len(body))
    start = time.monotonic()
    with pytest.raises(LayerError, match="PAX"):
        TarReader(io.BytesIO(header + END_OF_ARCHIVE)).next()
    assert time.monotonic() - start < 1


def test_truncated_member_data_is_an_error() -> None:
    archive = encode_header(b"f", REGTYPE, size=1000) + b"short"
    reader = TarReader(io.BytesIO(archive))
    assert reader.next() is not None
    with pytest.raises(LayerError, match="truncated"):
        reader.readinto(bytearray(1000))
        reader.readinto(bytearray(1000))


def test_unread_data_is_skipped() -> None:
    archive = (
        encode_header(b"a", REGTYPE, size=700) + b"a" * 700 + padding(700)
        + encode_header(b"b", REGTYPE, size=3) + b"bbb" + padding(3)
        + END_OF_ARCHIVE
    )
    reader = TarReader(io.BytesIO(archive))
    assert reader.next().name == b"a"  # type: ignore[union-attr]
    second = reader.next()
    assert second is not None and second.name == b"b"
    buf = bytearray(3)
    assert reader.readinto(buf) == 3 and bytes(buf) == b"bbb"
    assert reader.next() is None


def test_streams_with_only_read() -> None:
    archive = encode_header(b"f", REGTYPE, size=5) + b"hello" + padding(5) + END_OF_ARCHIVE

    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._inner.read(min(n, 3) if n > 0 else n)  # short reads on purpose

    reader = TarReader(ReadOnly(archive))  # type: ignore[arg-type]
    header = reader.next()
    assert header is not None and header.name == b"f"
    buf = bytearray(5)
    got = 0
    while got < 5:
        got += reader.readinto(memoryview(buf)[got:])
    assert bytes(buf) == b"hello" and reader.next() is None
