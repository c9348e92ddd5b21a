"""The tar format itself: encoding and decoding ustar/PAX headers.

Shared by the layer writer (`engine.fs.layertar`), the layer extractor
(`engine.fs.extract`) and the image exporters (`engine.oci.layout`).

Why not `tarfile`: headers we write must be byte-for-byte deterministic (no uname,
no atime, records in a fixed order, binary xattr values) and the reader is a
security boundary. Python 3.11.7's `tarfile` has a quadratic regex in PAX parsing
(CVE-2024-6232), reads a PAX header of any declared size into memory, keeps every
member in a list and copies its stream buffer on every small read. The reader here
parses length-prefixed PAX records linearly, caps metadata sizes and keeps nothing
but the current header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from engine.errors import ShipyardError

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)

REGTYPE = b"0"
AREGTYPE = b"\0"
LNKTYPE = b"1"
SYMTYPE = b"2"
CHRTYPE = b"3"
BLKTYPE = b"4"
DIRTYPE = b"5"
FIFOTYPE = b"6"
CONTTYPE = b"7"
XHDTYPE = b"x"
XGLTYPE = b"g"
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"

MAX_METADATA = 1 << 20
"""Largest PAX or GNU long-name header accepted (legit ones are a few KiB)."""

_XATTR_PREFIX = b"SCHILY.xattr."
_ZERO_BLOCK = bytes(BLOCK)


class LayerError(ShipyardError):
    """A layer or archive that cannot be written or read safely; names the member."""

    def __init__(self, message: str, member: str | bytes = "") -> None:
        if isinstance(member, bytes):
            member = member.decode("utf-8", "backslashreplace")
        # A hostile name must not print fake lines or terminal escapes after "ERROR:".
        member = "".join(c if c.isprintable() else repr(c)[1:-1] for c in member)
        self.message = message
        self.member = member
        super().__init__(f'layer member "{member}": {message}' if member else message)


# --------------------------------------------------------------------------- writing


def _base256(value: int, width: int) -> bytes:
    """GNU base-256 numeric field (only for device numbers too large for octal)."""
    if value < 0 or value >= 1 << (8 * (width - 1) - 1):
        raise LayerError(f"number {value} does not fit in a tar header")
    return b"\x80" + value.to_bytes(width - 1, "big")


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    size = len(body) + 1
    while len(str(size)) + len(body) != size:
        size = len(str(size)) + len(body)
    return str(size).encode() + body


_MAX_OCTAL_7 = 8**7
_MAX_OCTAL_11 = 8**11
_USTAR_TAIL = b"ustar\x0000" + bytes(64)  # magic, version, empty uname and gname
_USTAR_TAIL_SUM = sum(_USTAR_TAIL)
_PREFIX_PAD = bytes(167)  # prefix (155) and padding (12)


def encode_header(
    name: bytes,
    typeflag: bytes,
    *,
    mode: int = 0,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mtime: int = 0,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    xattrs: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """The header block(s) for one entry: an optional PAX header, then the ustar block.

    Fields that fit ustar go there; anything else (long or non-ASCII names, big sizes
    and ids, negative times, xattrs) goes into PAX records sorted by key, as Go's
    archive/tar writes them. uname/gname stay empty: ownership is numeric.
    """
    records: dict[bytes, bytes] | None = None
    if len(name) > 100 or not name.isascii():
        records = {b"path": name}
        name = name[:100]
    if linkname and (len(linkname) > 100 or not linkname.isascii()):
        records = records or {}
        records[b"linkpath"] = linkname
        linkname = linkname[:100]
    if not 0 <= uid < _MAX_OCTAL_7:
        records = records or {}
        records[b"uid"], uid = str(uid).encode(), 0
    if not 0 <= gid < _MAX_OCTAL_7:
        records = records or {}
        records[b"gid"], gid = str(gid).encode(), 0
    if not 0 <= size < _MAX_OCTAL_11:
        records = records or {}
        records[b"size"], size = str(size).encode(), 0
    if not 0 <= mtime < _MAX_OCTAL_11:
        records = records or {}
        records[b"mtime"], mtime = str(mtime).encode(), 0
    if xattrs:
        records = records or {}
        for key, value in xattrs:
            records[_XATTR_PREFIX + key] = value
    if devmajor or devminor:
        devs = b"".join(
            b"%07o\0" % dev if 0 <= dev < _MAX_OCTAL_7 else _base256(dev, 8) for dev in (devmajor, devminor)
        )
    else:
        devs = b"0000000\x000000000\x00"
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode & 0o7777, uid, gid, size, mtime)
    # The checksum counts the chksum field as 8 spaces; NUL padding adds nothing.
    checksum = sum(name) + sum(numbers) + 256 + typeflag[0] + sum(linkname) + _USTAR_TAIL_SUM + sum(devs)
    block = b"".join(
        (name.ljust(100, b"\0"), numbers, b"%06o\0 " % checksum, typeflag, linkname.ljust(100, b"\0"),
         _USTAR_TAIL, devs, _PREFIX_PAD)
    )
    if records is None:
        return block
    data = b"".join(_pax_record(k, records[k]) for k in sorted(records))
    base = records.get(b"path", name).rstrip(b"/").rsplit(b"/", 1)[-1]
    pax_name = b"PaxHeaders.0/" + base
    if len(pax_name) > 100 or not pax_name.isascii():
        pax_name = b"PaxHeaders.0/entry"
    pax = encode_header(pax_name, XHDTYPE, size=len(data))
    return pax + data + padding(len(data)) + block


def padding(size: int) -> bytes:
    """Zero bytes that fill `size` up to the next 512-byte block."""
    return bytes(-size % BLOCK)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class TarHeader:
    """One archive member as the archive describes it (paths are raw bytes)."""

    name: bytes
    typeflag: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: tuple[tuple[bytes, bytes], ...]

    @property
    def display_name(self) -> str:
        return self.name.decode("utf-8", "backslashreplace")

    @property
    def has_data(self) -> bool:
        """Whether data blocks follow (Go's rule: link, device, dir and fifo headers have none)."""
        return self.typeflag not in _HEADER_ONLY


_HEADER_ONLY = frozenset((LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE))


def _cstr(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def _number(field: bytes, what: str, name: bytes) -> int:
    if field and field[0] & 0x80:
        # GNU base-256: big-endian two's complement; 0x40 of the first byte is the sign.
        invert = 0xFF if field[0] & 0x40 else 0
        value = 0
        for i, byte in enumerate(field):
            byte ^= invert
            if i == 0:
                byte &= 0x7F
            value = (value << 8) | byte
        return ~value if invert else value
    text = _cstr(field).strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise LayerError(f"corrupt tar header: bad {what} field {field!r}", name) from None


def _parse_pax(data: bytes, name: bytes) -> dict[bytes, bytes]:
    """PAX records, parsed by their length prefixes (linear, no regular expressions)."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # some writers pad the record block with NULs
            break
        space = data.find(b" ", pos, pos + 20)
        if space < 0:
            raise LayerError("corrupt PAX header (no record length)", name)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise LayerError("corrupt PAX header (bad record length)", name) from None
        end = pos + length
        if length <= space - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise LayerError("corrupt PAX header (bad record)", name)
        record = data[space + 1 : end - 1]
        eq = record.find(b"=")
        if eq <= 0:
            raise LayerError("corrupt PAX header (record without key)", name)
        records[record[:eq]] = record[eq + 1 :]
        pos = end
    return records


class TarReader:
    """Iterates the headers of a tar stream and reads member data, strictly in order.

    `stream` only needs `read`/`readinto`; nothing is seeked. After a header is
    returned its data may be read with `readinto`; what is left unread is skipped
    when the next header is requested.
    """

    def __init__(self, stream: BinaryIO, *, max_metadata: int = MAX_METADATA) -> None:
        self._stream = stream if hasattr(stream, "readinto") else _ReadIntoAdapter(stream)
        self._max_metadata = max_metadata
        self._remaining = 0  # unread data bytes of the current member
        self._pad = 0  # padding after the current member's data
        self._done = False
        self._skip_buf = bytearray(1 << 16)

    def _read_exact(self, size: int, what: str, name: bytes = b"") -> bytes:
        chunks = []
        left = size
        while left:
            chunk = self._stream.read(left)
            if not chunk:
                raise LayerError(f"truncated archive while reading {what}", name)
            chunks.append(chunk)
            left -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _skip(self, size: int) -> None:
        view = memoryview(self._skip_buf)
        while size:
            n = self._stream.readinto(view[: min(size, len(view))])
            if not n:
                raise LayerError("truncated archive")
            size -= n

    def readinto(self, buf: memoryview | bytearray) -> int:
        """Read the current member's data into `buf`; 0 at the member's end."""
        if not self._remaining:
            return 0
        view = memoryview(buf)
        if len(view) > self._remaining:
            view = view[: self._remaining]
        n = self._stream.readinto(view)
        if not n:
            raise LayerError("truncated archive (member data ends early)")
        self._remaining -= n
        return n

    def next(self) -> TarHeader | None:
        """The next member's header, or None at the end of the archive."""
        if self._done:
            return None
        if self._remaining or self._pad:
            self._skip(self._remaining + self._pad)
            self._remaining = self._pad = 0
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            block = self._stream.read(BLOCK)
            if len(block) < BLOCK:
                more = self._read_exact(BLOCK - len(block), "a header") if block else b""
                block = block + more
                if not block:
                    # A stream that ends without the zero blocks: accept, like GNU tar.
                    self._done = True
                    if pax or long_name is not None:
                        raise LayerError("truncated archive after an extended header")
                    return None
            if block == _ZERO_BLOCK:
                self._done = True
                return None
            raw_name = _cstr(block[0:100])
            chksum = _number(block[148:156], "checksum", raw_name)
            unsigned = sum(block[:148]) + 256 + sum(block[156:])
            if chksum != unsigned:
                signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256
                if chksum != signed:
                    raise LayerError("corrupt tar header (checksum mismatch)", raw_name)
            typeflag = block[156:157]
            size = _number(block[124:136], "size", raw_name)
            if size < 0:
                raise LayerError("corrupt tar header (negative size)", raw_name)
            if typeflag in (XHDTYPE, XGLTYPE, GNU_LONGNAME, GNU_LONGLINK):
                if size > self._max_metadata:
                    raise LayerError(
                        f"extended header of {size} bytes exceeds the limit of {self._max_metadata}", raw_name
                    )
                data = self._read_exact(size, "an extended header", raw_name)
                self._skip(-size % BLOCK)
                if typeflag == XHDTYPE:
                    pax.update(_parse_pax(data, raw_name))
                elif typeflag == GNU_LONGNAME:
                    long_name = _cstr(data)
                elif typeflag == GNU_LONGLINK:
                    long_link = _cstr(data)
                # Global headers (XGLTYPE) carry comments from `git archive`; ignored.
                continue
            magic = block[257:263]
            name = raw_name
            if magic == b"ustar\x00":  # POSIX ustar: a prefix field extends the name
                prefix = _cstr(block[345:500])
                if prefix:
                    name = prefix + b"/" + name
            if long_name is not None:
                name = long_name
            linkname = long_link if long_link is not None else _cstr(block[157:257])
            mtime_ns = _number(block[136:148], "mtime", name) * 1_000_000_000
            uid = _number(block[108:116], "uid", name)
            gid = _number(block[116:124], "gid", name)
            xattrs: list[tuple[bytes, bytes]] = []
            for key, value in pax.items():
                if key == b"path" and value:
                    name = value
                elif key == b"linkpath" and value:
                    linkname = value
                elif key == b"size" and value:
                    size = _pax_int(value, key, name)
                elif key == b"uid" and value:
                    uid = _pax_int(value, key, name)
                elif key == b"gid" and value:
                    gid = _pax_int(value, key, name)
                elif key == b"mtime" and value:
                    mtime_ns = _pax_time(value, name)
                elif key.startswith(_XATTR_PREFIX):
                    xattrs.append((key[len(_XATTR_PREFIX) :], value))
                elif key.startswith(b"GNU.sparse."):
                    raise LayerError("sparse files are not supported in layers", name)
            if typeflag == AREGTYPE and name.endswith(b"/"):
                typeflag = DIRTYPE
            header = TarHeader(
                name=name,
                typeflag=typeflag,
                mode=_number(block[100:108], "mode", name),
                uid=uid,
                gid=gid,
                size=size,
                mtime_ns=mtime_ns,
                linkname=linkname,
                devmajor=_number(block[329:337], "devmajor", name) if magic.startswith(b"ustar") else 0,
                devminor=_number(block[337:345], "devminor", name) if magic.startswith(b"ustar") else 0,
                xattrs=tuple(sorted(xattrs)),
            )
            if header.has_data:
                self._remaining = size
                self._pad = -size % BLOCK
            return header


class _ReadIntoAdapter:
    """Gives a stream that only has read() the readinto() the reader uses."""

    def __init__(self, stream: BinaryIO) -> None:
        self.read = stream.read

    def readinto(self, buf: memoryview | bytearray) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _pax_int(value: bytes, key: bytes, name: bytes) -> int:
    try:
        number = int(value)
    except ValueError:
        raise LayerError(f"corrupt PAX {key.decode()} record {value!r}", name) from None
    if number < 0:
        raise LayerError(f"negative PAX {key.decode()} record", name)
    return number


def _pax_time(value: bytes, name: bytes) -> int:
    """A PAX time (`1700000000.123456789`, possibly negative) in nanoseconds."""
    text = value.decode("ascii", "replace")
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise LayerError(f"corrupt PAX mtime record {value!r}", name)
    ns = int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])
    return -ns if negative else ns
