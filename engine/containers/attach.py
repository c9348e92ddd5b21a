"""The stream between `shipyard run` and the container's supervisor: typed, length-prefixed frames.

A frame is one kind byte, a 4-byte big-endian length and the payload. The
supervisor sends READY (JSON: the bound ports) or FAILED (status and message)
once, then OUT/ERR output and finally EXIT (the status). The CLI sends IN
(stdin bytes), EOF (stdin closed), SIGNAL (a number to deliver) and RESIZE
(rows and columns). A socketpair carries it, inherited by the supervisor, so
no output is produced before the CLI is listening.
"""

from __future__ import annotations

import socket
import struct

READY = b"R"
FAILED = b"F"
OUT = b"1"
ERR = b"2"
EXIT = b"X"
IN = b"I"
EOF = b"C"
SIGNAL = b"S"
RESIZE = b"W"

_HEADER = struct.Struct(">cI")
MAX_FRAME = 1 << 20


def encode(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def send(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    sock.sendall(encode(kind, payload))


class FrameReader:
    """Feeds on received bytes, yields whole frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise ValueError("attach frame too large")
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            frames.append((kind, bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return frames


def read_frame(sock: socket.socket, reader: FrameReader, pending: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes] | None:
    """The next frame, blocking; None at EOF."""
    while not pending:
        data = sock.recv(65536)
        if not data:
            return None
        pending.extend(reader.feed(data))
    return pending.pop(0)
