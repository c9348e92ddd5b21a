"""Layer blobs made from snapshots, on demand, once.

Layers live uncompressed as snapshot directories. Their tar form is produced only
when something needs it: the diff_id (sha256 of the tar) when an image config is
written, the tar itself for an export, a gzip blob for an OCI export or a push. The
tar writer is deterministic, so a layer's tar can be regenerated at any time and is
checked against the recorded diff_id; compressed blobs are kept in the content store
per (diff_id, compression) so re-exporting a cached image never recompresses.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from cache.content_store import HashingWriter
from cache.index import LayerRow
from engine.errors import CacheError
from engine.fs.layertar import write_layer_tar
from engine.solver.context import Engine


_SUFFIX = {"gzip": "gzip", "uncompressed": ".tar", "zstd": "zstd"}


class _Tee:
    """Write to two streams at once (the blob, and the diff_id hasher)."""

    def __init__(self, first: object, second: object) -> None:
        self.first = first
        self.second = second

    def write(self, data: bytes) -> int:
        self.first.write(data)  # type: ignore[attr-defined]
        self.second.write(data)  # type: ignore[attr-defined]
        return len(data)

    def flush(self) -> None:
        pass


class LayerBlobs:
    def __init__(self, engine: Engine, source_date_epoch: int | None = None) -> None:
        self.engine = engine
        self.source_date_epoch = source_date_epoch
        self._pending: dict[int, Future[tuple[str, int]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def prefetch(self, layer: LayerRow) -> None:
        """Start computing a new layer's diff_id in the background.

        A build that will write an image needs every new layer's diff_id; computing it
        right after the step, while later steps run in their containers, takes it off
        the critical path.
        """
        with self._lock:
            if layer.id in self._pending or (layer.diff_id and self.source_date_epoch is None):
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diff-id")
            self._pending[layer.id] = self._pool.submit(self._compute_diff, layer)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _dir(self, layer: LayerRow) -> str:
        return self.engine.snapshotter.layer_path(layer.dir)

    def _write_tar(self, layer: LayerRow, out: object) -> None:
        write_layer_tar(
            self._dir(layer),
            out,  # type: ignore[arg-type]
            whiteouts="overlay" if layer.format == "overlay" else "oci",
            source_date_epoch=self.source_date_epoch,
        )

    def diff(self, layer: LayerRow) -> tuple[str, int]:
        """(diff_id, tar size) of a layer, computed once and remembered in the index."""
        if layer.diff_id and layer.tar_size is not None and self.source_date_epoch is None:
            return layer.diff_id, layer.tar_size
        with self._lock:
            pending = self._pending.get(layer.id)
        if pending is not None:
            return pending.result()
        return self._compute_diff(layer)

    def _compute_diff(self, layer: LayerRow) -> tuple[str, int]:
        hasher = HashingWriter()
        self._write_tar(layer, hasher)
        if self.source_date_epoch is None:
            self.engine.index.set_layer_diff(layer.id, hasher.digest, hasher.size)
        return hasher.digest, hasher.size

    def _check(self, layer: LayerRow, hasher: HashingWriter) -> None:
        expected, _ = self.diff(layer)
        if hasher.digest != expected:
            raise CacheError(f"layer {layer.dir} changed on disk: its tar is {hasher.digest}, recorded {expected}")

    def _original(self, layer: LayerRow) -> BinaryIO | None:
        """The uncompressed tar of a layer that came as a blob, from that blob."""
        if not layer.blob or not self.engine.store.has(layer.blob):
            return None
        from engine.oci.compress import decompress_stream

        return decompress_stream(self.engine.store.open(layer.blob))

    def _tar_into(self, layer: LayerRow, sink: object) -> None:
        """The layer's uncompressed tar into `sink`: from its original blob if it came as one."""
        original = self._original(layer)
        if original is None:
            self._write_tar(layer, sink)
            return
        with original:
            while chunk := original.read(1 << 20):
                sink.write(chunk)  # type: ignore[attr-defined]

    def compressed(self, layer: LayerRow, compression: str = "gzip") -> tuple[str, int]:
        """(digest, size) of the layer's compressed blob, made and stored on first use."""
        from engine.oci.compress import compressor

        if layer.blob and layer.blob_media_type and layer.blob_media_type.endswith(_SUFFIX.get(compression, "\0")):
            if self.engine.store.has(layer.blob):
                return layer.blob, self.engine.store.size(layer.blob)  # the original blob, as it came
        diff_id, _ = self.diff(layer)
        known = self.engine.index.get_variant(diff_id, compression)
        if known and self.engine.store.has(known[0]):
            return known
        hasher = HashingWriter()

        def produce(out: BinaryIO) -> None:
            stream = compressor(compression, out)  # type: ignore[arg-type]
            self._tar_into(layer, _Tee(stream, hasher))
            stream.close()

        digest, size = self.engine.store.write_with(produce)
        self._check(layer, hasher)
        self.engine.index.set_variant(diff_id, compression, digest, size)
        return digest, size

    def open_uncompressed(self, layer: LayerRow) -> BinaryIO:
        """A stream of the layer's tar, generated on the fly and verified at its end."""
        original = self._original(layer)
        if original is not None:
            return original
        read_fd, write_fd = os.pipe()
        reader = _CheckedPipe(os.fdopen(read_fd, "rb"))

        def produce() -> None:
            hasher = HashingWriter()
            try:
                with os.fdopen(write_fd, "wb") as sink:
                    self._write_tar(layer, _Tee(sink, hasher))
                self._check(layer, hasher)
            except BaseException as exc:  # handed to the reader, raised at EOF
                reader.error = exc

        reader.thread = threading.Thread(target=produce, name="layer-tar", daemon=True)
        reader.thread.start()
        return reader  # type: ignore[return-value]


class _CheckedPipe:
    """The read end of a generated layer: at EOF, any producer error is raised."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if not data:
            self._finish()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        if not n:
            self._finish()
        return n

    def _finish(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def close(self) -> None:
        self.raw.close()
        if self.thread is not None:
            self.thread.join()

    def __enter__(self) -> "_CheckedPipe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
