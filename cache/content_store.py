"""Blobs by sha256 under `blobs/sha256/`, written so a crash never leaves a bad blob.

Every write goes to a temp file in the same filesystem, is hashed on the way, checked
against the expected digest (when the caller knows it), fsynced and renamed into
place. A blob under its digest is therefore always complete and correct.

Every blob this process writes or finds present is noted in its lease
(`cache.leases`) under the GC lock, and so is each temp file while it is written:
a concurrent `prune` neither deletes a blob between "it exists" and its use, nor a
temp file being filled. A full disk removes the temp file and becomes one clear
CacheError naming the state directory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from cache.diskspace import disk_full_message, is_disk_full
from cache.leases import Leases
from engine.errors import CacheError

CHUNK = 1 << 20


def parse_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise CacheError(f"invalid digest: {digest!r}")
    return hexpart


class HashingWriter:
    """A write-only stream that counts and sha256-hashes what passes through it."""

    def __init__(self, sink: BinaryIO | None = None) -> None:
        self.sink = sink
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.hasher.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    def writable(self) -> bool:
        return True

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


class ContentStore:
    def __init__(self, blobs_dir: Path, tmp_dir: Path, fsync: bool = True) -> None:
        self.blobs_dir = blobs_dir
        self.tmp_dir = tmp_dir
        self.fsync = fsync
        self.leases = Leases.of(Path(tmp_dir).parent)  # the state root (`<root>/tmp`)

    def path(self, digest: str) -> Path:
        return self.blobs_dir / parse_digest(digest)

    def has(self, digest: str) -> bool:
        """Whether the blob is here; if it is, it stays for as long as this process lives."""
        path = self.path(digest)
        with self.leases.guard():
            present = path.exists()
            if present:
                self.leases.hold(blobs=[digest])
        return present

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise CacheError(f"blob {digest} is not in the content store") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None and digest != expected:
            raise CacheError(f"digest mismatch: expected {expected}, got {digest}")
        if self.has(digest):  # and now held: a concurrent prune keeps it
            return digest
        return self.write_with(lambda out: out.write(data), expected=digest)[0]

    def ingest(self, stream: BinaryIO, expected: str | None = None) -> tuple[str, int]:
        def copy(out: BinaryIO) -> None:
            while chunk := stream.read(CHUNK):
                out.write(chunk)

        return self.write_with(copy, expected=expected)

    def write_with(self, produce: Callable[[BinaryIO], object], expected: str | None = None) -> tuple[str, int]:
        """Run `produce(out)` into a temp file, verify, then publish it under its digest."""
        tmp = ""
        try:
            with self.leases.guard():
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")
                self.leases.hold(temps=[os.path.basename(tmp)])
            with os.fdopen(fd, "wb") as raw:
                writer = HashingWriter(raw)
                produce(writer)  # type: ignore[arg-type]
                raw.flush()
                if self.fsync:
                    os.fsync(raw.fileno())
            digest = writer.digest
            if expected is not None and digest != expected:
                raise CacheError(f"digest mismatch: expected {expected}, got {digest}")
            final = self.path(digest)
            with self.leases.guard():
                if final.exists():
                    os.unlink(tmp)
                else:
                    self.blobs_dir.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, final)
                    if self.fsync:
                        dir_fd = os.open(self.blobs_dir, os.O_RDONLY | os.O_DIRECTORY)
                        try:
                            os.fsync(dir_fd)
                        finally:
                            os.close(dir_fd)
                self.leases.hold(blobs=[digest])
            return digest, writer.size
        except BaseException as exc:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(exc, OSError) and is_disk_full(exc):
                raise CacheError(
                    disk_full_message(f"writing a blob{' (' + expected + ')' if expected else ''}", self.tmp_dir.parent, exc.errno)
                ) from None
            raise

    def verify(self, digest: str) -> bool:
        hasher = hashlib.sha256()
        with self.open(digest) as f:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
        return "sha256:" + hasher.hexdigest() == digest

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass
