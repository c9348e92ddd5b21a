"""`save`: images from the store into one archive — docker-archive or OCI layout tar.

Each image is written with the manifest and config bytes it has in the store, so
`save` then `load` gives back the same manifest digest, config digest and layer
digests. Layer blobs come from the content store when the image came as blobs
(loaded, imported from a layout) and are generated from the snapshots otherwise
(a built image's manifest names its layers uncompressed, by diff_id); either way
`engine.oci.layout` checks every blob's digest and size as it writes it.

Which images and names an argument selects follows `docker save`: `name:tag` saves
that tag, a bare repository name saves every tag of it, an ID saves the image with no
name (it loads nameless).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

from cache.index import LayerRow
from engine.errors import ExportError, ShipyardError
from engine.imagemgmt.catalog import ImageCatalog, is_nameless
from engine.oci import mediatypes
from engine.oci.image import Manifest
from engine.reference import parse_reference
from engine.solver.context import Engine

FORMATS = ("docker", "oci")


@dataclass(frozen=True)
class SavedImage:
    manifest_digest: str
    config_digest: str
    snapshot: int | None
    names: tuple[str, ...]


def select_images(catalog: ImageCatalog, refs: list[str]) -> list[SavedImage]:
    """The images (merged by manifest) and names the arguments select, in argument order."""
    chosen: dict[str, SavedImage] = {}

    def add(manifest: str, config: str, snapshot: int | None, names: tuple[str, ...]) -> None:
        previous = chosen.get(manifest)
        merged = tuple(dict.fromkeys((previous.names if previous else ()) + names))
        chosen[manifest] = SavedImage(manifest, config, snapshot, merged)

    for ref in refs:
        repository_rows = _whole_repository(catalog, ref)
        if repository_rows:
            for row in repository_rows:
                add(row.manifest, row.config, row.snapshot, (row.name,))
            continue
        match = catalog.lookup(ref)
        names = (match.row.name,) if match.by_name else ()
        add(match.row.manifest, match.row.config, match.row.snapshot, names)
    return list(chosen.values())


def _whole_repository(catalog: ImageCatalog, ref: str):  # type: ignore[no-untyped-def]
    """`docker save busybox`: every tag of the repository (none when REF has a tag or digest)."""
    try:
        reference = parse_reference(ref, default_tag="")
    except ShipyardError:
        return []
    if reference.tag or reference.digest:
        return []
    rows = []
    for entry in catalog.entries():
        for row in entry.rows:
            if not is_nameless(row) and parse_reference(row.name).repository == reference.repository:
                rows.append(row)
    return sorted(rows, key=lambda row: row.name)


class _StoreBlobs:
    """Blobs for the archive writer: stored blobs, or layer tars made from snapshots."""

    def __init__(self, engine: Engine) -> None:
        from engine.layers import LayerBlobs

        self.engine = engine
        self.layer_blobs = LayerBlobs(engine)
        self.layers: dict[str, tuple[LayerRow, str]] = {}

    def add(self, manifest: Manifest, snapshot: int | None) -> None:
        chain = self.engine.index.chain(snapshot) if snapshot is not None else []
        if len(chain) != len(manifest.layers):
            raise ExportError(
                f"the image's manifest lists {len(manifest.layers)} layers but its snapshot chain has {len(chain)}"
            )
        for descriptor, row in zip(manifest.layers, chain):
            self.layers.setdefault(descriptor.digest, (row.layer, descriptor.media_type))

    def open_blob(self, digest: str) -> BinaryIO:
        store = self.engine.store
        if store.has(digest):
            return store.open(digest)
        found = self.layers.get(digest)
        if found is None:
            raise ExportError(f"blob {digest} is not in the content store")
        layer, media_type = found
        if self.layer_blobs.diff(layer)[0] == digest:
            return self.layer_blobs.open_uncompressed(layer)
        if mediatypes.layer_compression(media_type) == "gzip":
            remade, _ = self.layer_blobs.compressed(layer, "gzip")  # deterministic: the same bytes again
            if remade == digest:
                return store.open(remade)
        raise ExportError(f"layer blob {digest} is no longer stored and cannot be made again from its snapshot")


def write_archive(engine: Engine, images: list[SavedImage], dest: str, fmt: str) -> None:
    """Write the archive at `dest` (atomically: a temp file renamed into place)."""
    from engine.oci.layout import ExportImage, write_docker_archive, write_oci_layout

    if fmt not in FORMATS:
        raise ExportError(f"unknown save format {fmt!r} (want docker or oci)")
    blobs = _StoreBlobs(engine)
    exports = []
    for image in images:
        manifest_bytes = engine.store.read(image.manifest_digest)
        manifest = Manifest.from_json(manifest_bytes)
        blobs.add(manifest, image.snapshot)
        exports.append(ExportImage(manifest_bytes, engine.store.read(image.config_digest), image.names))
    try:
        if fmt == "oci":
            write_oci_layout(dest, exports, blobs, as_tar=True)
        else:
            write_docker_archive(dest, exports, blobs)
    finally:
        blobs.layer_blobs.close()


def write_archive_to(engine: Engine, images: list[SavedImage], out: BinaryIO, fmt: str) -> None:
    """The archive into a stream (stdout): written to a temp file first, then copied."""
    engine.state.tmp.mkdir(parents=True, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(dir=engine.state.tmp, prefix="save-")
    try:
        path = os.path.join(tmp_dir, "archive.tar")
        write_archive(engine, images, path, fmt)
        with open(path, "rb") as archive:
            shutil.copyfileobj(archive, out, 1 << 20)
        out.flush()
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
