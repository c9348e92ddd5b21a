"""Bringing an image that arrives as blobs into the store: OCI layouts (and later
archives and registries).

Each layer blob is verified against its digest as it is stored, decompressed and
extracted into a snapshot while the uncompressed bytes are hashed and checked against
the config's diff_id — a mismatch stores nothing under that name. The original blob
stays in the content store, so exporting the image later sends exactly these bytes.
Layers already present on the same parent chain (same diff_ids) are reused, so images
sharing a base store it once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from engine.errors import ImageNotFoundError, ShipyardError
from engine.oci import mediatypes
from engine.oci.image import Image, Index, Manifest
from engine.solver.context import Engine

if TYPE_CHECKING:
    from engine.limits import Limits


class ImportError_(ShipyardError):
    """An image whose blobs do not match what its manifest and config say."""


class BlobReader(Protocol):
    def open_blob(self, digest: str) -> BinaryIO: ...


@dataclass(frozen=True)
class ImportedImage:
    manifest_digest: str
    config_digest: str
    snapshot: int | None
    image: Image


class _HashingReader:
    """Reads through a stream while hashing what passes (to check a diff_id)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hasher = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hasher.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def import_image(
    engine: Engine, manifest_bytes: bytes, blobs: BlobReader, *, limits: "Limits | None" = None
) -> ImportedImage:
    """Store a manifest's config and layers; returns the top snapshot of its chain.

    Each layer is held to `limits` (default: the config file's `[limits]`) while it is
    decompressed and extracted: a decompression bomb stops at the limit.
    """
    from engine.fs.extract import LayerLimitError, extract_layer
    from engine.limits import load_limits
    from engine.oci.compress import DecompressionLimitError, decompress_stream

    if limits is None:
        limits = load_limits()
    manifest = Manifest.from_json(manifest_bytes)
    store = engine.store
    with blobs.open_blob(manifest.config.digest) as raw:
        config_digest, _ = store.ingest(raw, expected=manifest.config.digest)
    image = Image.from_json(store.read(config_digest))
    if len(image.diff_ids) != len(manifest.layers):
        raise ImportError_(
            f"image config lists {len(image.diff_ids)} layers but the manifest has {len(manifest.layers)}"
        )
    manifest_digest = store.put_bytes(manifest_bytes)
    parent: int | None = None
    snapshotter = engine.snapshotter
    mode = "overlay" if snapshotter.layer_format == "overlay" else "oci"
    for descriptor, diff_id in zip(manifest.layers, image.diff_ids):
        existing = engine.index.snapshot_on(parent, diff_id)
        if existing is not None:
            parent = existing
            continue
        if not store.has(descriptor.digest):
            with blobs.open_blob(descriptor.digest) as raw:
                store.ingest(raw, expected=descriptor.digest)
        active = snapshotter.prepare_layer(parent)
        try:
            with store.open(descriptor.digest) as raw:
                with decompress_stream(raw, max_bytes=limits.layer_bytes) as plain:
                    reader = _HashingReader(plain)
                    try:
                        extract_layer(
                            reader,  # type: ignore[arg-type]
                            active.root,
                            mode=mode,
                            max_bytes=limits.layer_bytes,
                            max_entries=limits.layer_entries,
                        )
                        reader.drain()
                    except (DecompressionLimitError, LayerLimitError) as exc:
                        raise limits.exceeded(f"layer {descriptor.digest}", exc) from None
            got = "sha256:" + reader.hasher.hexdigest()
            if got != diff_id:
                raise ImportError_(f"layer {descriptor.digest}: its content is {got}, the config says {diff_id}")
            snapshot = snapshotter.commit(active)
        except BaseException:
            snapshotter.abort(active)
            raise
        layer = engine.index.snapshot(snapshot).layer
        engine.index.set_layer_origin(layer.id, diff_id, reader.size, descriptor.digest, descriptor.media_type)
        parent = snapshot
    return ImportedImage(manifest_digest, config_digest, parent, image)


# --------------------------------------------------------------------------- OCI layouts


class LayoutBlobs:
    """Blobs of an OCI image layout directory, read only from inside it."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def open_blob(self, digest: str) -> BinaryIO:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
            raise ImportError_(f"invalid digest {digest!r} in the layout")
        path = os.path.join(self.root, "blobs", "sha256", hexpart)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise ImportError_(f"blob {digest} is missing from the layout {self.root}") from None


def select_in_layout(root: str, ref: str = "", platform: str = "linux/amd64") -> bytes:
    """The manifest bytes a layout holds for `ref` (a tag, `@digest`, or "" when there is one)."""
    blobs = LayoutBlobs(root)
    try:
        with open(os.path.join(blobs.root, "index.json"), "rb") as f:
            index = Index.from_json(f.read())
    except FileNotFoundError:
        raise ImageNotFoundError(f"{root} is not an OCI layout (no index.json)") from None
    candidates = list(index.manifests)
    if ref.startswith("@") or ref.startswith("sha256:"):
        wanted = ref.lstrip("@")
        candidates = [d for d in candidates if d.digest == wanted]
    elif ref:
        candidates = [
            d
            for d in candidates
            if d.annotation(mediatypes.ANNOTATION_REF_NAME) == ref
            or (d.annotation(mediatypes.ANNOTATION_CONTAINERD_IMAGE_NAME) or "").endswith(":" + ref)
        ]
    if not candidates:
        raise ImageNotFoundError(f"no image {ref or '(any)'} in the OCI layout {root}")
    if len(candidates) > 1 and not ref:
        raise ImageNotFoundError(f"the OCI layout {root} holds several images: name one with :TAG or @DIGEST")
    return _resolve_platform(blobs, candidates[0].digest, candidates[0].media_type, platform)


def _resolve_platform(blobs: LayoutBlobs, digest: str, media_type: str, platform: str) -> bytes:
    with blobs.open_blob(digest) as f:
        data = f.read()
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise ImportError_(f"blob {digest} in the layout does not match its digest")
    if media_type in mediatypes.INDEX_TYPES or (not media_type and '"manifests"' in data.decode("utf-8", "replace")):
        nested = Index.from_json(data)
        os_name, _, arch = platform.partition("/")
        for descriptor in nested.manifests:
            p = descriptor.platform
            if p is None or (p.os == os_name and p.architecture == arch):
                return _resolve_platform(blobs, descriptor.digest, descriptor.media_type, platform)
        raise ImageNotFoundError(f"no {platform} image in the index {digest}")
    return data


def parse_layout_ref(value: str) -> tuple[str, str]:
    """`PATH`, `PATH:TAG` or `PATH@sha256:…` (after `oci-layout://`) → (path, ref)."""
    if "@" in value:
        path, digest = value.rsplit("@", 1)
        return path, "@" + digest
    head, sep, tag = value.rpartition(":")
    if sep and "/" not in tag and head:
        return head, tag
    return value, ""
