"""`--output` exporters: OCI image layout, docker-archive tarball, local directory, registry.

Each export asks for exactly the blobs it writes: an OCI export compresses layers
(once per layer, then reuses the stored gzip blob), a docker archive streams the
uncompressed layer tars straight from the snapshots, a local export copies the final
filesystem.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, BinaryIO

from engine.errors import ExportError
from engine.images import BuiltImage
from engine.layers import LayerBlobs
from engine.oci import mediatypes
from engine.oci.image import Descriptor, Manifest
from engine.outputs import PUSH_TYPES, OutputSpec
from engine.solver.context import Engine

if TYPE_CHECKING:
    from engine.progress.events import EventBus

COMPRESSIONS = {"gzip": mediatypes.OCI_LAYER_GZIP, "uncompressed": mediatypes.OCI_LAYER}


class _Blobs:
    """A BlobSource over the content store plus layers generated from snapshots."""

    def __init__(self, engine: Engine, blobs: LayerBlobs, built: BuiltImage) -> None:
        self.engine = engine
        self.layer_blobs = blobs
        self.by_diff = {blobs.diff(layer)[0]: layer for layer in built.layers}

    def open_blob(self, digest: str) -> BinaryIO:
        if self.engine.store.has(digest):
            return self.engine.store.open(digest)
        layer = self.by_diff.get(digest)
        if layer is None:
            raise ExportError(f"blob {digest} is neither stored nor a layer of this image")
        return self.layer_blobs.open_uncompressed(layer)


def export_manifest(built: BuiltImage, blobs: LayerBlobs, compression: str) -> tuple[bytes, str]:
    """The manifest to export: the stored one for uncompressed layers, else one naming compressed blobs."""
    if compression == "uncompressed":
        return built.manifest_bytes, built.manifest_digest
    media_type = COMPRESSIONS.get(compression)
    if media_type is None:
        raise ExportError(f"unsupported compression {compression!r} (want gzip or uncompressed)")
    layers = []
    for layer in built.layers:
        digest, size = blobs.compressed(layer, compression)
        layers.append(Descriptor(media_type, digest, size))
    manifest = Manifest(config=built.manifest.config, layers=tuple(layers))
    data = manifest.to_json()
    return data, blobs.engine.store.put_bytes(data)


def export(
    engine: Engine,
    blobs: LayerBlobs,
    built: BuiltImage,
    spec: OutputSpec,
    names: tuple[str, ...],
    events: EventBus | None = None,
) -> str:
    """Write one output; returns the digest of the manifest it wrote ('' for local)."""
    from engine.oci.layout import ExportImage, write_docker_archive, write_oci_layout

    if spec.type in PUSH_TYPES:
        return export_to_registry(engine, blobs, built, spec, names, events)
    dest = os.path.abspath(spec.dest)
    if spec.type == "local":
        export_local(engine, built.snapshot, dest)
        return ""
    name_attr = spec.attrs.get("name")
    export_names = tuple(name_attr.split(",")) if name_attr else names
    if spec.type == "oci":
        manifest, digest = export_manifest(built, blobs, spec.attrs.get("compression", "gzip"))
        as_tar = spec.flag("tar", not (os.path.isdir(dest) or spec.dest.endswith("/")))
        write_oci_layout(dest, [ExportImage(manifest, built.config_bytes, export_names)], _Blobs(engine, blobs, built), as_tar=as_tar)
        return digest
    if spec.type == "docker":
        manifest, digest = export_manifest(built, blobs, spec.attrs.get("compression", "uncompressed"))
        write_docker_archive(dest, [ExportImage(manifest, built.config_bytes, export_names)], _Blobs(engine, blobs, built))
        return digest
    raise ExportError(f"unknown output type {spec.type!r}")


def _push_names(spec: OutputSpec, names: tuple[str, ...]) -> tuple[str, ...]:
    name_attr = spec.attrs.get("name")
    return tuple(n.strip() for n in name_attr.split(",") if n.strip()) if name_attr else names


def check_push_names(outputs: list[OutputSpec], names: tuple[str, ...]) -> None:
    """Refuse, before building, a push with no name to push to (or a name that is not a reference)."""
    from engine.errors import UsageError
    from engine.reference import parse_reference

    for spec in outputs:
        if spec.type not in PUSH_TYPES or not (spec.type == "registry" or spec.flag("push", False)):
            continue
        targets = _push_names(spec, names)
        if not targets:
            raise UsageError(f"--output type={spec.type}: nothing to push to (give -t NAME or name=NAME)")
        for target in targets:
            parse_reference(target)


def export_to_registry(
    engine: Engine, blobs: LayerBlobs, built: BuiltImage, spec: OutputSpec, names: tuple[str, ...], events: EventBus | None
) -> str:
    """`type=registry` (and `type=image,push=true`): push the image under each name; returns its digest.

    `type=image` without push only names the image in the local store, which the build
    has already done for its -t tags.
    """
    if not (spec.type == "registry" or spec.flag("push", False)):
        return ""
    from engine.registry.client import RegistryClient
    from engine.registry.push import plan_push, push_plan

    plan = plan_push(engine, blobs, built.manifest_bytes, built.snapshot)
    with RegistryClient.from_environment() as client:
        for name in _push_names(spec, names):
            result = push_plan(engine, client, name, plan, events=events)
            if events is not None:
                from engine.progress.events import BuildMessage

                events.publish(BuildMessage(f"pushed {result.ref} digest: {result.digest} size: {result.size}"))
    return plan.digest


def export_local(engine: Engine, snapshot: int | None, dest: str) -> None:
    """Copy the result's whole filesystem into `dest` (created if needed)."""
    from engine.fs.copy import CopyOptions, copy_into
    from engine.fs.selection import Selected

    os.makedirs(dest, exist_ok=True)
    with engine.snapshotter.view(snapshot) as root:
        copy_into(root, [Selected("", root, True, False)], dest, "/", CopyOptions(preserve_owner=True))
