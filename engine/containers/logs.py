"""A container's output log: JSON lines like Docker's json-file driver.

Each record is `{"log": ..., "stream": "stdout"|"stderr", "time": RFC 3339}` and
holds one line (with its newline) or the partial line a chunk ended with, so
`--tail N` counts lines. Bytes that are not UTF-8 survive the round trip
(surrogateescape in, surrogateescape out). Only the supervisor writes; readers
tolerate a last line still being written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

STREAMS = {1: "stdout", 2: "stderr"}


def _timestamp(now: float) -> str:
    seconds = int(now)
    nanos = int((now - seconds) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


class LogWriter:
    """Appends records; unbuffered at the record level so `logs -f` sees them at once."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, stream: int, data: bytes) -> None:
        now = _timestamp(time.time())
        name = STREAMS.get(stream, "stdout")
        records = []
        for line in data.splitlines(keepends=True):
            text = line.decode("utf-8", "surrogateescape")
            records.append(json.dumps({"log": text, "stream": name, "time": now}) + "\n")
        payload = "".join(records).encode("ascii")
        view = memoryview(payload)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True)
class LogRecord:
    stream: int
    data: bytes
    time: str


def parse(line: bytes) -> LogRecord | None:
    try:
        entry = json.loads(line)
        return LogRecord(
            2 if entry.get("stream") == "stderr" else 1,
            str(entry.get("log", "")).encode("utf-8", "surrogateescape"),
            str(entry.get("time", "")),
        )
    except (ValueError, AttributeError):
        return None


def read_from(handle: BinaryIO) -> Iterator[LogRecord]:
    """Complete records from the handle's position; a trailing partial line is left unread."""
    while True:
        start = handle.tell()
        line = handle.readline()
        if not line:
            return
        if not line.endswith(b"\n"):
            handle.seek(start)
            return
        record = parse(line)
        if record is not None:
            yield record
