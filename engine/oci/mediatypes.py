"""Media types of the OCI image spec and of Docker's image manifest v2 schema 2.

Shipyard writes either family (BuildKit's `oci-mediatypes` switch) and reads both.
"""

from __future__ import annotations

from typing import Literal

# OCI image spec v1.1
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYOUT_VERSION = "1.0.0"

# Docker image manifest v2, schema 2
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"

# Annotations
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_CONTAINERD_IMAGE_NAME = "io.containerd.image.name"

LayerCompression = Literal["uncompressed", "gzip", "zstd"]

MANIFEST_TYPES = frozenset((OCI_MANIFEST, DOCKER_MANIFEST))
INDEX_TYPES = frozenset((OCI_INDEX, DOCKER_MANIFEST_LIST))
CONFIG_TYPES = frozenset((OCI_CONFIG, DOCKER_CONFIG))

_LAYER_COMPRESSION: dict[str, LayerCompression] = {
    OCI_LAYER: "uncompressed",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDISTRIBUTABLE: "uncompressed",
    OCI_LAYER_NONDISTRIBUTABLE_GZIP: "gzip",
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD: "zstd",
    DOCKER_LAYER: "uncompressed",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
}


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_layer(media_type: str) -> bool:
    return media_type in _LAYER_COMPRESSION


def is_docker(media_type: str) -> bool:
    return media_type.startswith("application/vnd.docker.")


def layer_compression(media_type: str) -> LayerCompression | None:
    """How a layer blob of this media type is compressed (None: not a layer type)."""
    return _LAYER_COMPRESSION.get(media_type)


def layer_media_type(compression: LayerCompression, *, oci: bool) -> str:
    """The layer media type BuildKit uses for a compression in OCI or Docker manifests.

    BuildKit has no Docker zstd type: zstd layers carry the OCI type in both.
    """
    if compression == "zstd":
        return OCI_LAYER_ZSTD
    if oci:
        return OCI_LAYER_GZIP if compression == "gzip" else OCI_LAYER
    return DOCKER_LAYER_GZIP if compression == "gzip" else DOCKER_LAYER


def manifest_media_type(*, oci: bool) -> str:
    return OCI_MANIFEST if oci else DOCKER_MANIFEST


def config_media_type(*, oci: bool) -> str:
    return OCI_CONFIG if oci else DOCKER_CONFIG


def index_media_type(*, oci: bool) -> str:
    return OCI_INDEX if oci else DOCKER_MANIFEST_LIST
