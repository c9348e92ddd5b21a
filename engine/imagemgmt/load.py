"""`load`: images from an archive into the store — OCI layouts and docker archives.

Two formats, recognized by their index files:
- an OCI image layout (`index.json` + `blobs/`), as written by `shipyard save`, BuildKit,
  `skopeo copy … oci-archive:`, and docker ≥ 25's `docker save`. The manifest bytes
  are taken from the archive exactly as they are, so an image keeps its manifest
  digest through `save` and `load`.
- a docker archive (`manifest.json` whose entries name a config file and layer tars),
  as docker ≤ 24 writes it (`<id>/layer.tar`, often with a layer shared by two images
  written once and symlinked). Such an archive has no manifest: one is made from the
  config and the layer files (Docker schema 2 types, the layer's own compression),
  the same bytes for the same archive every time.

When an archive has both (Shipyard's and docker ≥ 25's docker archives), the OCI index
wins and manifest.json only contributes names. Every blob is verified by
`engine.oci.importer.import_image` (digests, and each layer's diff_id while it is
unpacked); archive reading is `engine.imagemgmt.archive`, which never extracts.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from typing import Any, BinaryIO

from engine.errors import ShipyardError
from engine.imagemgmt.archive import ArchiveError, ArchiveIndex
from engine.imagemgmt.catalog import ImageCatalog
from engine.oci import mediatypes
from engine.oci.image import (
    Descriptor,
    ImageFormatError,
    Index,
    Manifest,
    sha256_digest,
)
from engine.reference import parse_reference
from engine.solver.context import Engine

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ArchiveImage:
    """One image found in an archive: its manifest's exact bytes and the names it carries."""

    manifest: bytes
    names: tuple[str, ...]


@dataclass(frozen=True)
class LoadedImage:
    image_id: str
    manifest_digest: str
    names: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...] = ()
    """(name, ID of the image that had it before): docker reports these moves."""


def host_platform() -> tuple[str, str]:
    machine = platform.machine()
    return "linux", _ARCH.get(machine, machine)


class _ArchiveBlobs:
    """Blobs by digest: `blobs/<alg>/<hex>` members, plus files a docker archive names."""

    def __init__(self, archive: ArchiveIndex) -> None:
        self.archive = archive
        self.extra: dict[str, str] = {}

    def _path(self, digest: str) -> str:
        if digest in self.extra:
            return self.extra[digest]
        algorithm, _, hexpart = digest.partition(":")
        if algorithm != "sha256" or len(hexpart) != 64 or not set(hexpart) <= _HEX:
            raise ArchiveError(f"{self.archive.label}: invalid digest {digest!r}")
        return f"blobs/sha256/{hexpart}"

    def open_blob(self, digest: str) -> BinaryIO:
        path = self._path(digest)
        if not self.archive.has(path):
            raise ArchiveError(f"{self.archive.label}: blob {digest} is missing from the archive")
        return self.archive.open(path)

    def read_verified(self, descriptor: Descriptor) -> bytes:
        path = self._path(descriptor.digest)
        if not self.archive.has(path):
            raise ArchiveError(f"{self.archive.label}: blob {descriptor.digest} is missing from the archive")
        data = self.archive.read(path)
        if sha256_digest(data) != descriptor.digest or len(data) != descriptor.size:
            raise ArchiveError(f"{self.archive.label}: blob {descriptor.digest} does not match its digest or size")
        return data


def _json(archive: ArchiveIndex, name: str) -> Any:
    try:
        return json.loads(archive.read(name))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{archive.label}: {name} is not valid JSON: {exc}") from None


def _name(text: str) -> str | None:
    """A normalized image name, or None for a string that is not one (a bare tag, a digest ref)."""
    try:
        ref = parse_reference(text)
    except ShipyardError:
        return None
    return None if ref.digest else str(ref)


# --------------------------------------------------------------------------- OCI layouts


def _pick_manifest(blobs: _ArchiveBlobs, descriptor: Descriptor, depth: int = 0) -> bytes | None:
    """The image manifest a descriptor leads to for the host platform (None: not an image)."""
    if depth > 4:
        raise ArchiveError(f"{blobs.archive.label}: indexes nested too deeply")
    data = blobs.read_verified(descriptor)
    media_type = descriptor.media_type
    try:
        if mediatypes.is_index(media_type) or (not media_type and b'"manifests"' in data):
            nested = Index.from_json(data)
            os_name, arch = host_platform()
            for child in nested.manifests:
                p = child.platform
                if p is None or (p.os == os_name and p.architecture == arch):
                    found = _pick_manifest(blobs, child, depth + 1)
                    if found is not None:
                        return found
            raise ArchiveError(f"{blobs.archive.label}: the index {descriptor.digest} has no {os_name}/{arch} image")
        manifest = Manifest.from_json(data)
    except ImageFormatError as exc:
        raise ArchiveError(f"{blobs.archive.label}: {descriptor.digest}: {exc}") from None
    if manifest.config.media_type and manifest.config.media_type not in mediatypes.CONFIG_TYPES:
        return None  # an artifact (attestation, signature), not an image
    return data


def _docker_names(archive: ArchiveIndex) -> dict[str, list[str]]:
    """config hex → names, from a manifest.json next to an OCI index."""
    if not archive.has("manifest.json"):
        return {}
    entries = _json(archive, "manifest.json")
    out: dict[str, list[str]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            continue
        hexpart = entry["Config"].rsplit("/", 1)[-1].removesuffix(".json")
        for tag in entry.get("RepoTags") or []:
            name = _name(tag) if isinstance(tag, str) else None
            if name:
                out.setdefault(hexpart, []).append(name)
    return out


def _oci_images(archive: ArchiveIndex, blobs: _ArchiveBlobs) -> list[ArchiveImage]:
    try:
        index = Index.from_json(archive.read("index.json"))
    except ImageFormatError as exc:
        raise ArchiveError(f"{archive.label}: index.json: {exc}") from None
    extra_names = _docker_names(archive)
    found: dict[str, tuple[bytes, list[str]]] = {}
    for descriptor in index.manifests:
        data = _pick_manifest(blobs, descriptor)
        if data is None:
            continue
        digest = sha256_digest(data)
        names = found.setdefault(digest, (data, []))[1]
        full = descriptor.annotation(mediatypes.ANNOTATION_CONTAINERD_IMAGE_NAME)
        ref_name = descriptor.annotation(mediatypes.ANNOTATION_REF_NAME) or ""
        candidates = [full] if full else ([ref_name] if (":" in ref_name or "/" in ref_name) else [])
        config_hex = Manifest.from_json(data).config.digest.partition(":")[2]
        candidates += extra_names.get(config_hex, [])
        for text in candidates:
            name = _name(text) if text else None
            if name and name not in names:
                names.append(name)
    if not found:
        raise ArchiveError(f"{archive.label}: the OCI index lists no image")
    return [ArchiveImage(data, tuple(names)) for data, names in found.values()]


# --------------------------------------------------------------------------- docker archives


def _file_digest(archive: ArchiveIndex, name: str) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with archive.open(name) as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def _layer_media_type(archive: ArchiveIndex, name: str) -> str:
    from engine.oci.compress import sniff

    kind = sniff(archive.head(name, 6))
    if kind == "gzip":
        return mediatypes.DOCKER_LAYER_GZIP
    if kind == "zstd":
        return mediatypes.OCI_LAYER_ZSTD
    if kind != "uncompressed":
        raise ArchiveError(f"{archive.label}: layer {name} is {kind}-compressed; images use gzip, zstd or plain tars")
    return mediatypes.DOCKER_LAYER


def _docker_images(archive: ArchiveIndex, blobs: _ArchiveBlobs) -> list[ArchiveImage]:
    entries = _json(archive, "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ArchiveError(f"{archive.label}: manifest.json lists no image")
    images = []
    for number, entry in enumerate(entries, 1):
        where = f"{archive.label}: manifest.json entry {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ArchiveError(f"{where} has no Config file")
        layers = entry.get("Layers") or []
        if not isinstance(layers, list) or not all(isinstance(layer, str) for layer in layers):
            raise ArchiveError(f"{where}: Layers must be a list of file names")
        config = archive.read(entry["Config"])
        config_digest = sha256_digest(config)
        blobs.extra[config_digest] = entry["Config"]
        descriptors = []
        for layer in layers:
            if not archive.has(layer):
                raise ArchiveError(f"{where}: layer file {layer!r} is not in the archive")
            digest, size = _file_digest(archive, layer)
            blobs.extra.setdefault(digest, layer)
            descriptors.append(Descriptor(_layer_media_type(archive, layer), digest, size))
        manifest = Manifest(
            config=Descriptor(mediatypes.DOCKER_CONFIG, config_digest, len(config)),
            layers=tuple(descriptors),
            media_type=mediatypes.DOCKER_MANIFEST,
        )
        names = []
        for tag in entry.get("RepoTags") or []:
            name = _name(tag) if isinstance(tag, str) else None
            if name and name not in names:
                names.append(name)
        images.append(ArchiveImage(manifest.to_json(), tuple(names)))
    return images


# --------------------------------------------------------------------------- loading


def read_images(archive: ArchiveIndex) -> tuple[list[ArchiveImage], _ArchiveBlobs]:
    """The images an archive holds (no store changes yet)."""
    blobs = _ArchiveBlobs(archive)
    if archive.has("index.json"):
        return _oci_images(archive, blobs), blobs
    if archive.has("manifest.json"):
        return _docker_images(archive, blobs), blobs
    if archive.has("repositories"):
        raise ArchiveError(f"{archive.label}: a docker archive from before docker 1.10 (no manifest.json) is not supported")
    raise ArchiveError(
        f"{archive.label}: not an image archive (it has neither index.json nor manifest.json); "
        "for a root filesystem tarball use `shipyard import`"
    )


def load_archive(engine: Engine, path: str | None, label: str) -> list[LoadedImage]:
    """Load every image of the archive at `path` (None: stdin) and name them."""
    from engine.oci.importer import import_image

    catalog = ImageCatalog(engine)
    loaded = []
    with ArchiveIndex.from_file(path, str(engine.state.tmp), label) as archive:
        images, blobs = read_images(archive)
        for item in images:
            try:
                imported = import_image(engine, item.manifest, blobs)
            except ArchiveError:
                raise
            except ShipyardError as exc:  # a bad blob, diff_id or config: say which archive
                raise ArchiveError(f"{label}: {exc.user_message()}") from None
            renamed = []
            for name in item.names:
                old = engine.index.get_image(name)
                engine.index.put_image(name, imported.manifest_digest, imported.config_digest, imported.snapshot)
                if old is not None and old.config != imported.config_digest:
                    renamed.append((name, old.config))
                    if catalog.entry(old.config) is None:
                        catalog.keep_nameless(old)  # docker: "renaming the old one … to empty string"
            if not item.names and catalog.entry(imported.config_digest) is None:
                engine.index.put_image(
                    imported.config_digest, imported.manifest_digest, imported.config_digest, imported.snapshot
                )
            loaded.append(LoadedImage(imported.config_digest, imported.manifest_digest, item.names, tuple(renamed)))
    return loaded
